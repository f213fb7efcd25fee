"""Watermarked outputs: a keyed green list (Kirchenbauer et al. 2023) and its detector.

key.py        WatermarkKey: a secret plus gamma, delta, context_width; JSON key files
greenlist.py  which tokens are green after a context: a whole vocabulary at once, or one token
processor.py  adds delta to the green logits while a local model samples
detect.py     green count, z-score and exact binomial p-value of a text or token ids
              (tokenizers load through stillroom.runtime, which imports nothing from here)
cli.py        `stillroom watermark keygen|detect`

Only processor.py imports torch at module level; the rest needs numpy and scipy (and a
tokenizer for text).
"""
