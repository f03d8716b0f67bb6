"""One transaction through XGBoost without the Python wrapper's per-call work.

`Booster.inplace_predict` on one row spends most of its time in Python before and after the C call: it
builds the call's JSON config and the input's array-interface JSON, checks the input type a dozen ways,
asks the booster its feature count, and wraps the output. For a batch that is noise; for the service's
single transactions it was ~0.3 of ~0.5 ms per prediction (measured on this machine at the median).

`OneRowPredictor` does that work once per loaded model: the config, and the array interface of a row
buffer it owns (whose address never changes, so its interface text stays valid), then each `predict`
copies the features into the buffer and makes the same C call (`XGBoosterPredictFromDense`) that
`inplace_predict` makes. Same function, same float32 input, same missing value: the same score, bit for
bit (a test checks it, and `for_booster` checks it on a probe row before it is used).

It reaches into xgboost's internals (``xgboost.core._LIB`` and friends, stable across 2.x and 3.x). If
they are missing or the probe disagrees, `for_booster` returns None and the caller keeps
`inplace_predict`: a newer xgboost can make this slower, never wrong.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["OneRowPredictor"]


class OneRowPredictor:
    """Predicts one row at a time for one booster (not thread-safe: it owns one row buffer)."""

    def __init__(self, booster: Any, n_features: int) -> None:
        from xgboost._data_utils import array_interface
        from xgboost.core import _LIB, _check_call, c_bst_ulong, make_jcargs

        self._booster = booster  # keeps the handle alive as long as this predictor
        self._handle = booster.handle
        self._lib, self._check_call, self._ulong = _LIB, _check_call, c_bst_ulong
        self._row = np.zeros((1, n_features), dtype=np.float32)
        self._interface = array_interface(self._row)  # holds the buffer's address: never replace the buffer
        self._config = make_jcargs(type=0, training=False, iteration_begin=0, iteration_end=0,
                                   missing=np.nan, strict_shape=False, cache_id=0)  # fmt: skip
        self._no_proxy = ctypes.c_void_p()

    @classmethod
    def for_booster(cls, booster: Any) -> OneRowPredictor | None:
        """A predictor for ``booster``, or None when this xgboost does not allow one (use inplace_predict)."""
        try:
            predictor = cls(booster, int(booster.num_features()))
            probe = np.linspace(-1.0, 1000.0, predictor._row.shape[1], dtype=np.float32)
            probe[::3] = np.nan  # missing values take the same path too
            expected = float(booster.inplace_predict(probe.reshape(1, -1))[0])
            if predictor.predict(probe.tolist()) != expected:
                logger.warning("one-row predictor disagrees with inplace_predict: not used")
                return None
        except (ImportError, AttributeError, TypeError, ValueError, RuntimeError) as error:
            logger.warning("one-row predictor unavailable with this xgboost (%s): using inplace_predict", error)
            return None
        return predictor

    def predict(self, features: Sequence[float]) -> float:
        """The model's score for one row of features, in the model's column order."""
        self._row[0] = features
        preds = ctypes.POINTER(ctypes.c_float)()
        shape = ctypes.POINTER(self._ulong)()
        dims = self._ulong()
        self._check_call(
            self._lib.XGBoosterPredictFromDense(
                self._handle, self._interface, self._config, self._no_proxy,
                ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(preds),
            )
        )  # fmt: skip
        return float(preds[0])
