"""The model runtime: a Hugging Face causal LM loaded and run in this process.

It sits below everything that runs a local model (teachers, watermark, trace, serve) and
imports none of them. A watermark reaches the sampler as a plain `LogitsProcessor`.

gemma.py     the built-in Gemma 3 270M: GGUF assembly, one-time conversion, its cache folder
loading.py   name or folder -> model and tokenizer (`resolve_model`, `load_lm`, `load_tokenizer`)
model.py     LocalModel: the forward passes (last-position logits, hidden states, log-probs)
scoring.py   total log-probs of candidate continuations, sharing a prompt prefix's KV cache
decoding.py  the sampling loop over the KV cache, one seeded generator per row
sampling.py  greedy / temperature / top-p picks, and the LogitsProcessor protocol
tensors.py   padding id lists into batches

Only model.py, scoring.py, decoding.py, sampling.py and tensors.py import torch.
"""
