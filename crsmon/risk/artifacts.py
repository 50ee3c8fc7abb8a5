"""Model files: written in skops format with a manifest, verified before loading.

A model is two files under ``models/``: ``<name>.skops`` (the fitted pipeline
in skops' safe format, never a pickle) and ``<name>.json`` (the manifest:
feature names, horizon, library versions, the SHA-256 of the model file and of
the training data, the choice and metrics, the creation time). Loading checks,
in this order, and refuses with a reason on the first failure:

1. the manifest is readable and names a model file beside it;
2. the model file's SHA-256 equals the manifest's (nothing swapped or damaged);
3. scikit-learn's major.minor version equals the one that trained it;
4. the feature names are ones this crsmon computes for the model's kind, in
   its order (a comparator model uses a subset);
5. every type in the file is on :data:`TRUSTED_TYPES` (skops' check), so a
   file can never make the loader run foreign code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import skops
import skops.io
from numpy.typing import NDArray

from crsmon import __version__
from crsmon.domain.features import BASELINE_FEATURES, DYNAMIC_FEATURES, FeatureRow

TRUSTED_TYPES = frozenset(
    {
        "numpy.dtype",
        "numpy.ndarray",
        "numpy.float64",
        "numpy.int64",
        "numpy.random.mtrand.RandomState",
        "numpy.random._mt19937.MT19937",
        "builtins.slice",
        "collections.OrderedDict",
        "sklearn.calibration.CalibratedClassifierCV",
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
        "sklearn.pipeline.Pipeline",
        "sklearn.impute._base.SimpleImputer",
        "sklearn.impute._base.MissingIndicator",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.linear_model._logistic.LogisticRegression",
        "sklearn.model_selection._split.GroupKFold",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss._loss.CyHalfBinomialLoss",
        "sklearn.ensemble._hist_gradient_boosting._bitset.BitSet",
    }
)
"""Types a crsmon model file may contain (skops refuses any other)."""

FEATURE_SETS = {"baseline": BASELINE_FEATURES, "dynamic": DYNAMIC_FEATURES}


class ModelFileError(ValueError):
    """A model file or its manifest failed a check; the message says which."""


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def library_versions() -> dict[str, str]:
    """The versions a manifest records (and loading compares)."""
    return {
        "crsmon": __version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "skops": skops.__version__,
    }


def save_model(
    estimator: Any, directory: Path, name: str, manifest: dict[str, Any]
) -> Path:
    """Write ``<name>.skops`` and its manifest ``<name>.json``; return the manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    model_file = directory / f"{name}.skops"
    skops.io.dump(estimator, model_file)
    content = {
        **manifest,
        "name": name,
        "file": model_file.name,
        "sha256": sha256_of(model_file),
        "versions": library_versions(),
    }
    path = directory / f"{name}.json"
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
    return path


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A verified model, ready to score feature rows."""

    manifest: dict[str, Any]
    estimator: Any

    @property
    def key(self) -> str:
        """``<name>@<first 12 hex of the model file's SHA-256>``."""
        return f"{self.manifest['name']}@{self.manifest['sha256'][:12]}"

    @property
    def features(self) -> tuple[str, ...]:
        """The feature names, in model order."""
        return tuple(self.manifest["features"])

    def matrix(self, rows: Sequence[FeatureRow]) -> NDArray[np.float64]:
        """The model's columns of ``rows`` (NaN: missing).

        Raises:
            ValueError: a row lacks one of the model's features.
        """
        values = []
        for row in rows:
            named = row.as_dict()
            if not set(self.features) <= named.keys():
                raise ValueError("rows: a feature of the model is missing")
            values.append([named[f] for f in self.features])
        x = [[np.nan if v is None else v for v in row] for row in values]
        return np.asarray(x, dtype=np.float64).reshape(len(rows), len(self.features))

    def probabilities(self, rows: Sequence[FeatureRow]) -> list[float]:
        """P(outcome) for each row."""
        if not rows:
            return []
        return [float(p) for p in self.estimator.predict_proba(self.matrix(rows))[:, 1]]


def load_model(manifest_path: Path) -> LoadedModel:
    """Load a model after every check of the module docstring.

    Raises:
        ModelFileError: a check failed (the message names it).
    """
    try:
        manifest = json.loads(manifest_path.read_text())
        model_file = manifest_path.parent / manifest["file"]
        expected = manifest["sha256"]
        trained_with = manifest["versions"]["scikit-learn"]
        features = tuple(manifest["features"])
        kind = manifest["kind"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"manifest: unreadable ({type(exc).__name__})") from None
    if not model_file.is_file():
        raise ModelFileError(f"file: {model_file.name} is missing")
    content = model_file.read_bytes()  # read once: checked and loaded alike
    if hashlib.sha256(content).hexdigest() != expected:
        raise ModelFileError("sha256: the model file does not match its manifest")
    if _minor(trained_with) != _minor(sklearn.__version__):
        raise ModelFileError(
            f"versions: trained with scikit-learn {trained_with}, "
            f"this is {sklearn.__version__}: retrain (crsmon model train)"
        )
    known = FEATURE_SETS.get(kind, ())
    if not features or [f for f in known if f in features] != list(features):
        raise ModelFileError("features: not the features this crsmon computes")
    return LoadedModel(manifest, _estimator(content, expected))


_LOADED: dict[str, Any] = {}
_KEEP = 16


def _estimator(content: bytes, sha256: str) -> Any:
    """The estimator of verified file content, built once per content: every
    API app, policy and grading run of a process shares one read-only object.
    ``sha256`` has just been checked against ``content``, so it is the key."""
    if sha256 not in _LOADED:
        untrusted = set(skops.io.get_untrusted_types(data=content))
        unknown = sorted(untrusted - TRUSTED_TYPES)
        if unknown:
            raise ModelFileError(f"types: not trusted: {', '.join(unknown)}")
        if len(_LOADED) >= _KEEP:
            _LOADED.clear()
        _LOADED[sha256] = skops.io.loads(content, trusted=sorted(untrusted))
    return _LOADED[sha256]
