"""Serving: the HTTP API (FastAPI) over a predictor (torch or ONNX Runtime). No Ray here.

schemas     request / response bodies (pydantic)
predictors  the Predictor protocol, TorchPredictor, the ONNX Runtime predictor, load_predictor, check_model_dir
state       ModelHolder: background load, readiness, the health probe
app         build_app: the routes, 4xx answers, the body limit

The Ray Serve deployment that batches requests into the predictor is distributed/serve.py.
"""
