"""Serving: the HTTP APIs (FastAPI) over a classifier (torch or ONNX Runtime) or a causal LM. No Ray here.

schemas     request / response bodies (pydantic)
predictors  the Predictor protocol, TorchPredictor, the ONNX Runtime predictor, load_predictor, check_model_dir
state       ModelHolder: background load, readiness, the health probe
app         build_app: the routes (/v1/classify and Hugging Face's text-classification route), 4xx answers,
            the body limit
llm/        causal LMs: OpenAI's chat and text completions API over a continuous batch

The Ray Serve deployment that batches requests into the predictor is distributed/serve.py.
"""
