"""Ready-made classification tasks built from real text a package registry ships.

A task here is a JSONL file of `{"id", "text", "label"}` rows with gold labels, written by a
plain function (no CLI, no network), plus the teacher prompt that goes with it: a few-shot
prefix whose examples are kept out of the data, ending where the label word comes next, so
a white-box teacher can be scored by the log-prob of each label.

wordnet   WordNet 3.0 noun glosses labelled with their lexicographer category
          (Debian package `wordnet-base`); the default task in examples/.
"""
