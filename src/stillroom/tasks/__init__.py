"""Ready-made tasks built from real text a package registry ships.

A task here is a JSONL file of rows with a gold answer, written by a plain function (no CLI,
no network), plus the teacher prompt that goes with it: a few-shot prefix whose examples
are kept out of the data, ending where the answer comes next.

wordnet          WordNet 3.0 noun glosses labelled with their lexicographer category
                 (Debian package `wordnet-base`); a white-box teacher is scored by the
                 log-prob of each label. The default task in examples/.
wordnet-derived  a WordNet definition -> the derived word it defines ("in a magical manner
                 (adverb)" -> "magically"); a generation task with a reference.
"""
