"""Models wrap a network with its preprocessing, class names and fit/evaluate/predict/save/load."""

from text_recognizer.models.classifier import ArtifactError, ClassifierModel, Predictions

__all__ = ["ArtifactError", "ClassifierModel", "Predictions"]
