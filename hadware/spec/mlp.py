"""The MLP block's vector-file contract and its quantized weights, in numpy only.

What the hardware generator (:mod:`hadware.hw.mlp`, which bakes the weights into ROMs), the
golden model (:mod:`hadware.golden.mlp`) and the exporter (:mod:`hadware.sw.export`) must agree
on:

- the vector files: W.npz (latent float weights ``w_gate_up`` ``(2*d_hidden, d_model)``,
  ``w_down`` ``(d_model, d_hidden)``, gains ``g_gate_up`` ``(d_model,)``, ``g_down``
  ``(d_hidden,)``), checked by :func:`check_weights`, and IN.npz (``x`` ``(t, d_model)``),
  checked by :func:`check_inputs`;
- the constants stored with the weights (the "constants stored with the weights" section of
  the :mod:`hadware.golden.mlp` specification): ternary codes (:func:`hadware.spec.ternary.
  ternarize`, once), fixed-point gains, ``(Kc, ek)`` and ``SH0`` per layer, in
  :class:`BitLinearParams` / :class:`MlpWeights`, made by :func:`quantize_weights` (from
  latent floats) or :func:`load_exported` (from an export, never quantizing again).

Configuration numbers come from an :class:`~hadware.config.mlp.MlpConfig` (duck-typed: this
module reads its attributes and never imports it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from hadware.errors import InputError
from hadware.spec import ternary
from hadware.spec.quant import BlockRangeError, block_fixed_point
from hadware.spec.ternary import BETA_MIN, RequantizationError
from hadware.spec.weights import weight_format

if TYPE_CHECKING:
    from hadware.config.mlp import BitLinearGeometry, MlpConfig

__all__ = [
    "BitLinearParams",
    "MlpWeights",
    "as_weights",
    "check_array",
    "check_inputs",
    "check_keys",
    "check_weights",
    "input_blocks",
    "load_exported",
    "make_layer",
    "quantize_codes",
    "quantize_weights",
]


@dataclasses.dataclass(frozen=True, eq=False)
class BitLinearParams:
    """Everything one BitLinear layer of the hardware stores.

    Attributes
    ----------
    name : str
        ``"gate_up"`` or ``"down"``.
    codes : numpy.ndarray
        int8 ternary codes, shape ``(fan_out, fan_in)``.
    beta : float
        The weight scale, as :func:`~hadware.spec.ternary.ternarize` returned it.
    gain : numpy.ndarray
        float64 RMSNorm gains, shape ``(fan_in,)`` (used by the float reference).
    gain_fx : numpy.ndarray
        int64 fixed-point gains ``G_i`` (fraction ``gain_frac_bits``).
    kappa_mant, kappa_exp : int
        ``(Kc, ek)``: ``beta * sqrt(fan_in) / 127 ~= Kc * 2**-ek``.
    shift0 : int
        ``SH0``, the per-layer part of the output shift.
    """

    name: str
    codes: np.ndarray
    beta: float
    gain: np.ndarray
    gain_fx: np.ndarray
    kappa_mant: int
    kappa_exp: int
    shift0: int


@dataclasses.dataclass(frozen=True, eq=False)
class MlpWeights:
    """The quantized weights of one MLP block for a given configuration.

    Build it with :func:`quantize_weights` (from latent float weights, quantizing once) or
    :func:`load_exported` (from :meth:`export` output, never quantizing again).
    """

    cfg: MlpConfig
    gate_up: BitLinearParams
    down: BitLinearParams

    def rom_words(self, layer: str) -> np.ndarray:
        """The ROM image of a layer's codes (``"gate_up"`` or ``"down"``) in the packing
        layout of the config's weight format."""
        return weight_format(self.cfg.weights).pack(getattr(self, layer).codes)

    def export(self) -> dict[str, np.ndarray]:
        """The arrays to save (for example with ``numpy.savez``) and to reload with
        :func:`load_exported`: packed codes, betas, float gains and the layout version (and,
        for int8 weights, ``weight_format``)."""
        fmt = weight_format(self.cfg.weights)
        out: dict[str, np.ndarray] = {"layout_version": np.array(fmt.layout.version)}
        if fmt.name != "ternary":
            out["weight_format"] = np.array(fmt.name)
        for p in (self.gate_up, self.down):
            out[f"rom_{p.name}"] = self.rom_words(p.name)
            out[f"beta_{p.name}"] = np.array(p.beta, dtype=np.float64)
            out[f"g_{p.name}"] = p.gain.copy()
        return out


def _weight_shapes(cfg: MlpConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    return {
        "w_gate_up": ((2 * cfg.d_hidden, cfg.d_model), "(2*d_hidden, d_model)"),
        "w_down": ((cfg.d_model, cfg.d_hidden), "(d_model, d_hidden)"),
        "g_gate_up": ((cfg.d_model,), "(d_model,)"),
        "g_down": ((cfg.d_hidden,), "(d_hidden,)"),
    }


def check_array(source: str, name: str, arrays: Mapping[str, Any],
                shape: tuple[int, ...], shape_text: str) -> np.ndarray:
    """Array ``name`` of a vector file ``source``, checked: present, real-valued, of ``shape``
    (``shape_text`` names it in the message), finite. An :class:`InputError` otherwise."""
    if name not in arrays:
        raise InputError(f"{source}: array {name!r} is missing")
    a = np.asarray(arrays[name])
    if a.dtype.kind not in "iuf":
        raise InputError(f"{source}: {name!r} must be a real-valued array, not {a.dtype}")
    if a.shape != shape:
        raise InputError(f"{source}: {name!r} has shape {a.shape}, expected {shape_text} = "
                         f"{shape}")
    finite = np.isfinite(a)
    if not finite.all():
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise InputError(f"{source}: {name!r} contains NaN or infinite values "
                         f"({int((~finite).sum())}, the first at index {first})")
    return a


def check_keys(source: str, arrays: Mapping[str, Any], known: list[str]) -> None:
    """A mapping of arrays with no name outside ``known``; an :class:`InputError` otherwise."""
    if not isinstance(arrays, Mapping):
        raise InputError(f"{source}: expected a mapping of array names to arrays, "
                         f"not {type(arrays).__name__}")
    unknown = sorted(set(arrays) - set(known))
    if unknown:
        raise InputError(f"{source}: unknown array(s) {', '.join(map(repr, unknown))}; "
                         f"expected {', '.join(known)}")


def check_weights(cfg: MlpConfig, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check the latent weight arrays of W.npz and return them.

    Expects exactly ``w_gate_up`` (2*d_hidden, d_model), ``w_down`` (d_model, d_hidden),
    ``g_gate_up`` (d_model,) and ``g_down`` (d_hidden,), real-valued and finite. Raises
    :class:`~hadware.errors.InputError` naming the array for a missing or unknown array, a wrong
    shape or dtype, or a NaN/infinite value.
    """
    shapes = _weight_shapes(cfg)
    check_keys("W.npz", arrays, list(shapes))
    return {k: check_array("W.npz", k, arrays, s, t) for k, (s, t) in shapes.items()}


def check_inputs(cfg: MlpConfig, arrays: Mapping[str, Any]) -> np.ndarray:
    """Check IN.npz and return ``x`` as float64, shape ``(t, d_model)`` (``t >= 0``).

    Raises :class:`~hadware.errors.InputError` naming ``x`` when it is missing, not 2-D with
    ``d_model`` columns, not real-valued, or holds NaN/infinite values, for unknown arrays, and
    naming the token and element for a token beyond the input range (:func:`input_blocks`).
    """
    check_keys("IN.npz", arrays, ["x"])
    if "x" not in arrays:
        raise InputError("IN.npz: array 'x' is missing")
    shape = np.shape(arrays["x"])
    if len(shape) != 2 or shape[1] != cfg.d_model:
        raise InputError(f"IN.npz: 'x' has shape {shape}, expected (t, d_model) = "
                         f"(t, {cfg.d_model})")
    x = check_array("IN.npz", "x", arrays, shape, "(t, d_model)").astype(np.float64)
    input_blocks(cfg, x)
    return x


def input_blocks(cfg: MlpConfig, x: Any) -> tuple[np.ndarray, np.ndarray]:
    """Step 0 of the specification: the mantissas ``X`` (int64 ``(t, d_model)``) and
    exponents ``xe`` (int64 ``(t,)``) of float tokens ``x``
    (:func:`hadware.spec.quant.block_fixed_point` in the config's input format). Raises
    :class:`~hadware.errors.InputError` naming the token and element of a token that fits at
    no exponent."""
    try:
        return block_fixed_point(x, cfg.x_bits, cfg.x_frac_bits, cfg.x_exp_bits)
    except BlockRangeError as e:
        raise InputError(f"IN.npz: 'x' {e} (x_bits {cfg.x_bits}, x_frac_bits "
                         f"{cfg.x_frac_bits}, x_exp_bits {cfg.x_exp_bits})") from None


def make_layer(geom: BitLinearGeometry, codes: np.ndarray, beta: float,
               gain: np.ndarray, w_name: str, g_name: str) -> BitLinearParams:
    """The constants of one BitLinear (:class:`BitLinearParams`) from its codes, scale and
    float gains; an :class:`InputError` naming ``g_name`` or ``w_name`` for a gain outside
    the gain format or a scale too large for the output format."""
    gain = np.asarray(gain, dtype=np.float64)
    g_fx = np.floor(gain * 2.0 ** geom.gain_frac_bits + 0.5)
    lo, hi = -(2 ** (geom.gain_bits - 1)), 2 ** (geom.gain_bits - 1) - 1
    bad = (g_fx < lo) | (g_fx > hi)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise InputError(f"{g_name}[{i}] = {float(gain[i])!r} does not fit the gain format "
                         f"({geom.gain_bits} bits, {geom.gain_frac_bits} fraction bits: "
                         f"[{lo / 2 ** geom.gain_frac_bits}, {hi / 2 ** geom.gain_frac_bits}])")
    if not (math.isfinite(beta) and beta >= float(np.float32(BETA_MIN))):
        raise InputError(f"beta of {w_name} must be finite and at least {BETA_MIN} (as "
                         f"float32), not {beta!r}")
    kappa = beta * math.sqrt(geom.fan_in) / 127.0
    mant, exp = ternary.to_mant_exp(kappa, geom.kappa_bits)
    shift0 = geom.shift0(exp)
    if shift0 < geom.shift0_min():
        ek_min = exp + geom.shift0_min() - shift0
        beta_max = 127.0 * 2.0 ** (geom.kappa_bits - ek_min) / math.sqrt(geom.fan_in)
        raise InputError(f"beta of {w_name} is {beta!r}, too large for the output format "
                         f"({geom.out_bits} bits, {geom.out_frac_bits} fraction bits): "
                         f"it must be below about {beta_max:.6g}")
    return BitLinearParams(name=geom.name, codes=np.ascontiguousarray(codes, dtype=np.int8),
                           beta=float(beta), gain=gain.copy(), gain_fx=g_fx.astype(np.int64),
                           kappa_mant=mant, kappa_exp=exp, shift0=shift0)


def quantize_weights(cfg: MlpConfig, w: Mapping[str, Any]) -> MlpWeights:
    """Quantize the latent float weights of W.npz for the hardware, once.

    Ternarizes ``w_gate_up`` and ``w_down`` (:func:`hadware.spec.ternary.ternarize`) and
    converts gains and betas to the constants of the specification. Raises
    :class:`~hadware.errors.InputError` as :func:`check_weights` does, for a gain outside the
    gain format and for a beta too large for the output format, and
    :class:`~hadware.spec.ternary.RequantizationError` (naming the array) for weights that
    are already ternary-valued.
    """
    a = check_weights(cfg, w)
    layers = {}
    for geom in (cfg.gate_up, cfg.down):
        w_name, g_name = f"w_{geom.name}", f"g_{geom.name}"
        codes, beta = quantize_codes(geom, a[w_name], w_name)
        layers[geom.name] = make_layer(geom, codes, beta, a[g_name], w_name, g_name)
    return MlpWeights(cfg=cfg, **layers)


def quantize_codes(geom: BitLinearGeometry, w: np.ndarray, w_name: str
                   ) -> tuple[np.ndarray, float]:
    """The codes and scale of latent weights ``w`` in the geometry's weight format
    (:mod:`hadware.spec.weights`), once; a
    :class:`~hadware.spec.ternary.RequantizationError` names the array."""
    try:
        return weight_format(geom.weights).quantize(w)
    except RequantizationError as e:
        raise RequantizationError(f"W.npz: {w_name!r}: {e}") from None


def load_exported(cfg: MlpConfig, arrays: Mapping[str, Any]) -> MlpWeights:
    """Rebuild :class:`MlpWeights` from :meth:`MlpWeights.export` output without quantizing
    anything again: codes are unpacked from the ROM words and betas are taken as stored.

    Raises :class:`~hadware.errors.InputError` for a missing array, a layout version other than
    the current one, a wrong gain shape or a bad beta, and
    :class:`~hadware.spec.ternary.TernaryError` for ROM words that do not decode.
    """
    source = "exported weights"
    fmt = weight_format(cfg.weights)
    names = ["layout_version"] + [f"{k}_{n}" for n in ("gate_up", "down")
                                  for k in ("rom", "beta", "g")]
    check_keys(source, arrays, [*names, "weight_format"])
    for k in names:
        if k not in arrays:
            raise InputError(f"{source}: array {k!r} is missing")
    stored = str(np.asarray(arrays.get("weight_format", "ternary")))
    if stored != fmt.name:
        raise InputError(f"{source}: weight_format is {stored!r}, the configuration's weights "
                         f"are {fmt.name!r}")
    version = int(np.asarray(arrays["layout_version"]))
    if version != fmt.layout.version:
        raise InputError(f"{source}: packing layout version {version} is not supported "
                         f"(this version writes and reads {fmt.layout.version})")
    layers = {}
    for geom in (cfg.gate_up, cfg.down):
        n = geom.name
        codes = fmt.unpack(np.asarray(arrays[f"rom_{n}"]), geom.fan_out, geom.fan_in)
        beta = float(check_array(source, f"beta_{n}", arrays, (), "a scalar"))
        gain = check_array(source, f"g_{n}", arrays, (geom.fan_in,), "(fan_in,)")
        layers[n] = make_layer(geom, codes, beta, gain, f"rom_{n}", f"g_{n}")
    return MlpWeights(cfg=cfg, **layers)


def as_weights(cfg: MlpConfig, weights: Mapping[str, Any] | MlpWeights) -> MlpWeights:
    """:class:`MlpWeights` from any of: an :class:`MlpWeights`, exported arrays
    (:meth:`MlpWeights.export`, recognised by their ``layout_version``; loaded without
    quantizing again) or latent float weights (W.npz; quantized once)."""
    if isinstance(weights, MlpWeights):
        if weights.cfg != cfg:
            raise InputError("the weights were quantized for a different configuration")
        return weights
    if "layout_version" in weights:
        return load_exported(cfg, weights)
    return quantize_weights(cfg, weights)

