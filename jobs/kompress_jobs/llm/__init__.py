"""Causal language models (task LanguageModeling): loading them as users keep them (a Hugging Face
checkpoint, a GGUF file, an ONNX Runtime GenAI folder), the text they are judged on, perplexity and
next-token fidelity, and the generation benchmark (time to first token, decode tokens per second).
The runners are in runtimes/ (torch_causal_lm.py, onnx_genai.py) like every other runtime's."""
