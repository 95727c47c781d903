"""The prediction service: a FastAPI app around a promoted `ClassifierModel`, plus its web page."""
