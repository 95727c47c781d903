"""Curating data: data versions, labelled images from folders, CSVs and feedback, the labelling queue,
the review of feedback."""
