"""The run configuration: typed, validated, read from YAML and saved into the run folder.

One object with a section per pipeline stage. Presets are partial overrides applied on top of the defaults, then the
user's YAML, then command-line overrides (``section.key=value``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from toothseg.atomic import atomic_write_text
from toothseg.durations import parse_hhmmss
from toothseg.errors import ConfigError, first_line


def _check_scales(v: list[tuple[int, int]]) -> list[tuple[int, int]]:
    if not v:
        raise ValueError("give at least one (height, width) scale, e.g. [[320, 640]]")
    for h, w in v:
        if h % 32 or w % 32 or h <= 0 or w <= 0:
            raise ValueError(f"scale {h}x{w}: both sides must be positive multiples of 32 (e.g. 320x640)")
    return v


def _check_hhmmss(v: str) -> str:
    try:
        parse_hhmmss(v)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return v


Scales = Annotated[list[tuple[int, int]], AfterValidator(_check_scales)]
HHMMSS = Annotated[str, AfterValidator(_check_hhmmss)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CurateConfig(_Section):
    # Defaults measured on the real data (docs/curation.md): copies <= 32 bits, distinct patients >= 54 bits.
    hash_threshold: int = Field(42, ge=0, le=1024, description="max pHash distance (bits of hash_size**2) of two copies")
    hash_size: int = Field(16, ge=4, le=32, description="pHash side: hash_size**2 bits; the threshold is in these bits")
    align_bound: int = Field(88, ge=0, le=1024, description="pairs with raw distance <= this are registered and "
                             "re-hashed (catches crops); higher = slower, more robust")
    conflict_dice: float = Field(0.95, ge=0, le=1, description="two copies' labels conflict below this Dice")
    policy: Literal["keep-finer", "keep-all-same-fold", "drop-all", "keep-first"] = "keep-finer"
    n_folds: int = Field(5, ge=2, le=20)
    area_bins: int = Field(3, ge=1, le=10, description="tooth-area quantile bins used to stratify folds")


class ModelConfig(_Section):
    name: str = Field("unet", description="'unet', 'unetplusplus', 'manet', 'fpn', ... or 'sam-vit-b' etc.")
    encoder: str = Field("tu-efficientnetv2_s", description="smp encoder name; 'tu-<timm name>' for timm encoders")
    weights: str | None = Field(None, description="local weights file, 'cache' (offline timm/HF cache) or None")
    decoder_channels: list[int] | None = None
    extra: dict[str, Any] = Field(default_factory=dict, description="architecture-specific keyword arguments")
    scales: Scales | None = Field(None, description="this model's own (height, width) training scales; None = "
                                  "train.scales (recipe: SAM at 1024x1024)")


class LossConfig(_Section):
    bce: float = Field(1.0, ge=0)
    dice: float = Field(1.0, ge=0)
    lovasz: float = Field(1.0, ge=0)
    boundary: float = Field(0.0, ge=0, description="weight of a boundary (Hausdorff distance-transform) term aimed "
                            "at HD95 (MONAI HausdorffDTLoss on hard-labelled samples; scipy distance transforms, "
                            "a few ms per image on CPU); 0 = off")


class TrainConfig(_Section):
    scales: Scales = Field(default_factory=lambda: [(320, 640)], description="(height, width) list")
    resize: Literal["resize", "letterbox"] = "resize"
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(4, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    grad_clip: float = Field(1.0, ge=0)
    loss: LossConfig = Field(default_factory=LossConfig)
    mixup_p: float = Field(0.0, ge=0, le=1)
    mixup_pseudo_only: bool = False
    augment: Literal["none", "light", "strong"] = "strong"
    hard_fraction: float = Field(0.1, ge=0, le=1, description="share of lowest-scoring OOF samples oversampled")
    hard_repeat: int = Field(1, ge=0, description="extra copies of each hard sample per epoch")
    max_time: HHMMSS | None = Field(None, description="wall-clock budget per model, HH:MM:SS; training is planned to "
                                    "end on it (the last epoch may be partial; validation and checkpoints included)")
    max_steps: int = Field(-1, ge=-1)
    limit_train_batches: float | int | None = None
    val_every: int = Field(1, ge=1, description="validate every N epochs; the final weights are always validated")
    schedule: Literal["cosine", "onecycle", "linear"] = Field(
        "cosine", description="learning-rate shape over the planned steps: 'cosine' (warm-up then cosine to 1%), "
        "'onecycle' (30% cosine ramp from lr/25, then cosine to lr/1e4; ignores warmup_epochs), 'linear' (warm-up "
        "then linear decay to 1%)")
    accumulate: int = Field(1, ge=1, description="micro-batches per optimizer step (effective batch = "
                            "batch_size x accumulate); budgets and schedules count optimizer steps")
    ema_decay: float = Field(0.0, ge=0, lt=1, description="if > 0: validate, checkpoint and bundle an exponential "
                             "moving average of the weights with this decay per optimizer step (0.99-0.995 suits "
                             "budgets of a few hundred steps)")
    progressive_share: float = Field(0.0, ge=0, le=0.9, description="first share of the planned steps trained at "
                                     "half the scale (each side), then full scale; 0 = off")
    cache: bool = Field(True, description="decode and fit each image and label to the network size once per run, "
                        "in memory (exact: augmentation runs after fitting)")
    channels_last: bool | Literal["auto"] = Field(
        "auto", description="channels-last memory format; 'auto': on for CPU training of depthwise-conv encoders "
        "(EfficientNet/MobileNet families: about 1.2x faster measured on AVX2), off otherwise (ResNet: slower)")
    profile: bool = Field(False, description="time data loading, compute, validation and checkpointing; print a "
                          "summary and write profile.json into the model folder")
    precision: str = Field("32-true", description="Lightning precision, or 'auto': 16-bit mixed on GPU, bf16-mixed "
                           "on CPUs with native bf16 (not when ONEDNN_MAX_CPU_ISA caps oneDNN below "
                           "AVX512_CORE_BF16), else 32-true")
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto", description="DataLoader worker processes; 'auto': none on CPUs with up to 2 cores or with the cache "
        "on a CPU-only run (the cache makes loading cheap), else min(4, cores // 2)")
    threads: int | None = Field(None, description="torch CPU threads; None = all cores")


class PseudoConfig(_Section):
    schedule: Literal["labelled", "labelled-continue", "pretrain", "mix", "pretrain-mix", "consistency"] = \
        "pretrain-mix"
    confidence: Literal["agreement", "entropy", "band", "spread"] = "agreement"
    select: Literal["all", "topk", "quantile", "threshold"] = "quantile"
    select_value: float = Field(0.8, ge=0, description="k for topk, kept fraction for quantile, min score for threshold")
    soft: bool = Field(False, description="distil on the teachers' probabilities instead of hard masks")
    rounds: int = Field(1, ge=1, description="iterative rounds: the student becomes the next teacher")
    pretrain_epochs: int = Field(10, ge=1)
    pretrain_share: float = Field(0.0, ge=0, lt=1, description="if > 0: share of train.max_time/max_steps spent on "
                                  "pseudo pretraining, the rest on fine-tuning (two stages cost one model's budget)")
    pseudo_weight: float = Field(1.0, gt=0, description="per-sample loss weight of pseudo-labelled items")
    labelled_share: float = Field(0.5, ge=0, lt=1, description="in a labelled+pseudo stage, labelled items are "
                                  "repeated until they are at least this share of an epoch (0: no repetition)")
    teacher: str | None = Field(None, description="train/<tag> whose fold models label ('bundle': RUN/bundle); "
                                "None = the supervised family with the best CV Dice")
    warm_start: bool = Field(True, description="a student's first stage starts from its teacher's fold-k weights")
    confidence_threshold: float = Field(0.95, ge=0.5, le=1, description="pixels with max(p, 1-p) below this are "
                                        "ignored in the loss (consistency; pseudo-labels with pixel_confidence)")
    ema_decay: float = Field(0.99, ge=0, lt=1, description="consistency: EMA teacher decay per optimizer step")
    unlabelled_weight: float = Field(1.0, ge=0, description="consistency: weight of the unlabelled loss")
    rampup_share: float = Field(0.2, ge=0, le=1, description="consistency: share of the steps over which the "
                                "unlabelled weight ramps up linearly from 0")
    consistency_dice: float = Field(0.0, ge=0, description="consistency: weight of a masked Dice term besides BCE")
    cutmix_p: float = Field(0.5, ge=0, le=1, description="share of unlabelled / pseudo-labelled samples CutMixed")
    pixel_confidence: bool = Field(False, description="offline schedules: ignore pseudo-label pixels whose teacher "
                                   "probability is below confidence_threshold (from the soft map)")
    stability_keep: float = Field(0.0, ge=0, le=1, description="ST++ filter: if > 0, training saves snapshots at "
                                  "1/3 and 2/3 and pseudo-labelling keeps this share of the images, the most stable "
                                  "across the teacher's snapshots (0: off)")
    pseudo_strong_aug: bool = Field(False, description="offline schedules: strong photometric augmentation and "
                                    "CutMix (cutmix_p) on pseudo-labelled items only")


class PredictConfig(_Section):
    tta: list[str] = Field(default_factory=lambda: ["hflip"])
    threshold: float | None = Field(None, ge=0, le=1, description="None: the OOF-tuned threshold of the bundle")
    min_component: int | None = Field(None, ge=0, description="drop tooth blobs under this many pixels; None: the "
                                      "bundle's OOF-tuned choice")
    fill_holes: bool | None = Field(None, description="fill holes inside teeth; None: the bundle's OOF-tuned choice")
    batch_size: int = Field(2, ge=1)


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    preset: str = "cpu"
    seed: int = Field(42, description="the one seed: folds, network init, data order, augmentation")
    curate: CurateConfig = Field(default_factory=CurateConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    models: list[ModelConfig] = Field(default_factory=list, description="extra models trained and fused with 'model'")
    train: TrainConfig = Field(default_factory=TrainConfig)
    pseudo: PseudoConfig = Field(default_factory=PseudoConfig)
    predict: PredictConfig = Field(default_factory=PredictConfig)

    @model_validator(mode="before")
    @classmethod
    def _one_seed(cls, data: Any) -> Any:
        """Configs saved when training had a seed of its own (``train.seed``): it becomes the seed."""
        if isinstance(data, dict) and isinstance(data.get("train"), dict) and "seed" in data["train"]:
            train = dict(data["train"])
            seed = train.pop("seed")
            if data.get("seed", seed) != seed:
                raise ValueError(f"train.seed {seed} and seed {data['seed']} differ; set only 'seed' (it drives "
                                 "folds and training)")
            data = {**data, "seed": seed, "train": train}
        return data


PRESETS: dict[str, dict[str, Any]] = {
    # The write-up's configuration, for GPUs: EfficientNetV2 UNet at 640x1280 + SAM-ViT at 1024x1024, mixup, all losses.
    # The SAM-ViT member starts from the official SAM weights when given (model weights: sam_vit_b_01ec64.pth in YAML).
    "recipe": {
        "model": {"name": "unet", "encoder": "tu-tf_efficientnetv2_s", "scales": [(640, 1280)]},
        "models": [{"name": "sam-vit-b", "scales": [(1024, 1024)], "extra": {"grad_checkpoint": True}}],
        "train": {"scales": [(640, 1280), (1024, 1024)], "epochs": 100, "batch_size": 8, "mixup_p": 0.3,
                  "precision": "16-mixed", "num_workers": 8, "augment": "strong"},
        "predict": {"tta": ["hflip"]},
    },
    # Best accuracy reachable in about 30 minutes per model on 2 CPU cores, chosen by the 30-minute ablations in
    # bench/RESULTS.md: a light decoder (the decoder at full resolution dominates CPU cost), 256x512 (1.5x cheaper
    # steps than 320x640 and no worse; resizing tufts masks there and back loses 0.1 Dice point), a one-cycle
    # schedule sized to the time budget with a high peak learning rate, validation every third epoch, bf16 autocast
    # where the CPU has native bf16, light augmentation (a budget of ~10 epochs: under-fitting is the risk).
    # Students: `mix` with confidence-masked, strongly augmented pseudo-labels. Against labelled-continue at this
    # budget (bench/label_efficiency.md) it was ahead at 10 % labels and level at 100 % (25 %: not run); consistency,
    # whose step costs 2.2-2.4 labelled steps, was ahead at 10 %, level at 25 % and behind at 100 %.
    "cpu": {
        "model": {"name": "unet", "encoder": "tu-tf_efficientnetv2_b0", "decoder_channels": [128, 64, 32, 16, 16]},
        "train": {"scales": [(256, 512)], "epochs": 40, "batch_size": 4, "max_time": "00:30:00",
                  "num_workers": "auto", "augment": "light", "mixup_p": 0.0, "lr": 2e-3, "warmup_epochs": 0.3,
                  "schedule": "onecycle", "val_every": 3, "precision": "auto"},
        "pseudo": {"schedule": "mix", "pixel_confidence": True, "pseudo_strong_aug": True},
        "predict": {"tta": ["hflip"]},
    },
    # Seconds: demo and tests.
    "tiny": {
        "model": {"name": "unet", "encoder": "tu-tf_efficientnetv2_b0", "decoder_channels": [32, 16, 16, 8, 8],
                  "extra": {"encoder_depth": 5}},
        # few steps from scratch: a high learning rate matters most (synthetic 2-fold, 72 steps: lr 3e-4 OOF Dice
        # 0.24, 2e-3 0.83, 5e-3 0.88)
        "train": {"scales": [(128, 256)], "epochs": 2, "batch_size": 4, "num_workers": 0, "augment": "light",
                  "warmup_epochs": 0.0, "lr": 4e-3},
        "pseudo": {"pretrain_epochs": 1},
        "predict": {"tta": ["hflip"], "batch_size": 4},
    },
}


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like section.key=value (e.g. train.epochs=5)")
    key, raw = item.split("=", 1)
    keys = key.strip().split(".")
    if not all(k.strip() for k in keys):
        raise ConfigError(f"override '{item}': the key '{key}' has an empty part; write section.key=value")
    try:
        return keys, yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{item}': the value is not valid YAML ({first_line(exc)}); "
                          "quote it or fix it") from None


def _format_validation(exc: ValidationError, origin: str, overrides: list[str] | None = None) -> str:
    """One line blaming the override that set the bad value when there is one, else ``origin``."""
    errs = exc.errors()
    e = errs[0]
    loc = ".".join(str(x) for x in e["loc"])
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    for item in reversed(overrides or []):
        key = item.split("=", 1)[0].strip()
        if loc == key or loc.startswith(key + ".") or key.startswith(loc + "."):
            return f"override '{item}': invalid config value '{loc}': {e['msg']}{more}; fix or remove this --set"
    return f"{origin}: invalid config value '{loc}': {e['msg']}{more}; fix it in the YAML or override"


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML config file's mapping, or a one-line `ConfigError` (missing, a folder, binary, invalid, not a mapping)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: config file not found; check the path")
    if not p.is_file():
        raise ConfigError(f"{p}: is a folder, not a config file; pass a YAML file (e.g. RUN/config.yaml)")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file; pass a YAML config file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config ({exc.strerror or exc}); check its permissions") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({first_line(exc)}); fix the syntax") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: the config must be a mapping of sections (curate:, model:, train:, ...)")
    return loaded


def build_config(preset: str = "cpu", yaml_path: str | Path | None = None, overrides: list[str] | None = None,
                 mapping: dict[str, Any] | None = None) -> Config:
    """Defaults <- preset <- YAML file <- ``section.key=value`` overrides, validated. ``mapping``: the YAML file's
    settings when the caller has them already (e.g. a run's config.yaml, trimmed); errors still name the file."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}")
    data: dict[str, Any] = _deep_merge({"preset": preset}, PRESETS[preset])
    origin = f"preset '{preset}'"
    if yaml_path is not None:
        data = _deep_merge(data, read_yaml_mapping(yaml_path) if mapping is None else mapping)
        origin = str(yaml_path)
    for item in overrides or []:
        keys, value = _parse_override(item)
        cur = data
        for k in keys[:-1]:
            cur = cur.setdefault(k, {})
            if not isinstance(cur, dict):
                raise ConfigError(f"override '{item}': '{k}' is not a section")
        cur[keys[-1]] = value
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, origin, overrides)) from None


def save_config(cfg: Config, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def load_config(path: str | Path) -> Config:
    """Load a config saved by `save_config` (a run folder's ``config.yaml``)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no config.yaml in the run folder; run 'toothseg prepare' or 'toothseg run' first")
    try:
        return Config.model_validate(read_yaml_mapping(p))
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, str(p))) from None
