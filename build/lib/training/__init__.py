"""Config-driven training of `text_recognizer` models: validation, run directories, checkpoints, resume."""
