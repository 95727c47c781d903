"""The errors a command reports as one line (exit status 2) instead of a traceback: the user's to fix."""

from text_recognizer.datasets.download import DownloadError
from text_recognizer.datasets.idx import IdxFormatError
from text_recognizer.datasets.versions import DataVersionError
from text_recognizer.labels import LabelError
from text_recognizer.models.classifier import ArtifactError
from text_recognizer.promoted import PromotedModelError
from training.calibration import CalibrationError
from training.config import ConfigError
from training.runtime import DeviceError
from training.trainer import DivergenceError

USER_ERRORS = (
    CalibrationError,
    ConfigError,
    DeviceError,
    DownloadError,
    DataVersionError,
    FileExistsError,
    IdxFormatError,
    ArtifactError,
    LabelError,
    DivergenceError,
    PromotedModelError,
)
