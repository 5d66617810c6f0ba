"""Checkpoints in the official formats of other codebases, as state dicts of our backbones.

What each publishes (the key names were checked against the official code):

* facebookresearch/vicreg ``resnet50.pth`` (``main_vicreg.py`` saves
  ``model.module.backbone.state_dict()``): its own ``resnet.py``, whose parameters carry
  torchvision's names (``conv1``, ``bn1``, ``layer1.0.conv1`` ...) and which has no ``fc``; its
  extra ``ConstantPad2d(1)`` before a padding-2 stem conv equals torchvision's padding 3. The
  full checkpoint ``model.pth`` is ``{"epoch", "model", "optimizer"}`` with ``module.backbone.*``
  and ``module.projector.*`` keys.
* facebookresearch/barlowtwins ``resnet50.pth``: ``torchvision.models.resnet50`` with
  ``fc = Identity``, so the same names; ``checkpoint.pth`` holds ``"model"`` with
  ``module.backbone.*``, ``module.projector.*`` and ``module.bn.*``.
* facebookresearch/dino ``dino_resnet50_pretrain.pth``: torchvision names (``hubconf.py`` loads
  it into ``torchvision.models.resnet50`` with ``strict=False`` because ``fc`` is absent);
  ``dino_deitsmall16_pretrain.pth`` and the other ViTs: ``vision_transformer.py``'s names,
  which are timm's (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.N.norm1``,
  ``blocks.N.attn.qkv`` ..., ``norm.*``); full checkpoints are ``{"student", "teacher",
  "optimizer", "epoch", "args", "dino_loss"}`` whose wrappers hold ``[module.]backbone.*`` and
  ``[module.]head.*``. The teacher is taken, as DINO's own evaluations do
  (``--checkpoint_key teacher``).
* torchvision state dicts (``resnet50(weights=...).state_dict()``): ``fc.*`` is dropped.

:func:`to_backbone_state` unwraps such an object, keeps the backbone's part, drops classifier
heads (and says which keys it dropped), puts the keys under the module our backbone keeps
them in (``net.`` for torchvision ResNets, ``vit.`` for ViTs) and resizes a ViT position
embedding to our grid. :func:`fit_error` explains a checkpoint that does not fit: the missing
and unexpected keys (a few of each and their counts), shapes that differ, and what to set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

from selfsup.backbones.vit import VIT_SIZES
from selfsup.backbones.vit import resize_pos_embed as vit_pos_embed
from selfsup.errors import CheckpointError

CONTAINERS = ("teacher", "model", "state_dict", "model_state_dict", "backbone", "student")
"""Keys of a full checkpoint that hold the model, tried in this order (DINO's teacher first,
its student only when there is no teacher)."""

WRAPPERS = ("module.", "backbone.", "encoder.")
"""Prefixes of DDP (``module.``) and of the method wrappers (``backbone.`` in VICReg, Barlow
Twins and DINO's ``MultiCropWrapper``); when some keys carry one, only those are kept."""

HEADS = ("fc.", "head.", "head_dist.", "fc_norm.")
"""Classifier heads: dropped (and reported) when the backbone has no such key."""

TARGET_PREFIXES = ("", "net.", "vit.")

STEM_KEYS = r"(net\.)?conv1\.weight|features\.0\.0\.weight|(vit\.)?patch_embed\.proj\.weight"
"""The first layer's weight: torchvision ResNets, ``SmallResNet``, ViTs."""
"""Where our backbones keep the published modules: ``TorchvisionResNet.net``, ``ViT.vit``."""


@dataclass
class Converted:
    """A state dict for our backbone, the format it was read as, and what was left out."""

    state: dict[str, torch.Tensor]
    source: str
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def unwrap(obj: Any) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The flat ``{name: tensor}`` inside a loaded checkpoint, and how it was reached."""
    notes: list[str] = []
    while isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        key = next((k for k in CONTAINERS if isinstance(obj.get(k), dict)), None)
        if key is None:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors and all(isinstance(k, str) for k in tensors):
                skipped = sorted(str(k) for k in obj if k not in tensors)
                notes.append(f"ignored the non-tensor entries {', '.join(skipped)}")
                return tensors, notes
            raise CheckpointError(
                "no state dict found: the file's top-level keys are "
                f"{', '.join(map(str, list(obj)[:12]))}; expected tensors, or one of "
                f"{', '.join(CONTAINERS)} holding them"
            )
        if key == "teacher" and "student" in obj:
            notes.append("took the teacher of a DINO-style checkpoint (its evaluations do)")
        else:
            notes.append(f"took the checkpoint's {key!r} entry")
        obj = obj[key]
    if not isinstance(obj, dict):
        raise CheckpointError(f"expected a state dict, found a {type(obj).__name__}")
    return dict(obj), notes


def _backbone_part(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Strip wrapper prefixes; where only some keys carry one, keep those and drop the rest."""
    dropped: list[str] = []
    changed = True
    while changed and state:
        changed = False
        for prefix in WRAPPERS:
            inside = [k for k in state if k.startswith(prefix)]
            if inside:
                dropped += [k for k in state if not k.startswith(prefix)]
                state = {k[len(prefix) :]: state[k] for k in inside}
                changed = True
    return state, dropped


def to_backbone_state(obj: Any, target: dict[str, torch.Tensor]) -> Converted:
    """Map a loaded checkpoint ``obj`` onto the keys of ``target`` (our backbone's state dict)."""
    state, notes = unwrap(obj)
    state, dropped = _backbone_part(state)
    best = max(TARGET_PREFIXES, key=lambda p: sum(p + k in target for k in state))
    if best and not any(k.startswith(best) for k in state):
        state = {best + k: v for k, v in state.items()}
    source = {"net.": "torchvision ResNet", "vit.": "timm / DINO ViT"}.get(best, "selfsup")
    for key in [k for k in state if k not in target]:
        if key.removeprefix(best).startswith(HEADS):
            dropped.append(key.removeprefix(best))
            del state[key]
    counters = [k for k in target if k.endswith("num_batches_tracked") and k not in state]
    if counters:  # older torchvision files lack batch norm's step counter (unused: momentum set)
        state.update({k: target[k] for k in counters})
        notes.append(f"{len(counters)} batch-norm num_batches_tracked counters were absent")
    pos = best + "pos_embed"
    if pos in state and pos in target and state[pos].shape != target[pos].shape:
        state[pos] = resize_pos_embed(state[pos], target[pos].shape)
        notes.append(f"resized pos_embed {tuple(state[pos].shape)} to our grid")
    return Converted(state, source, sorted(dropped), notes)


def resize_pos_embed(pos: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A ViT position embedding (1, 1 + g*g, D) resized to (1, 1 + G*G, D) by the rule our ViT
    applies to inputs of another size (:func:`selfsup.backbones.vit.resize_pos_embed`, DINO's
    ``interpolate_pos_encoding``), so loaded weights see the embedding DINO's model would give
    our image size; the CLS entry is kept."""
    if pos.ndim != 3 or len(shape) != 3:
        return pos  # not a position embedding at all: the shape error names it
    n_old, n_new = pos.shape[1] - 1, shape[1] - 1
    g, new = round(n_old**0.5), round(n_new**0.5)
    if g * g != n_old or new * new != n_new or pos.shape[2] != shape[2]:
        return pos  # not a square grid of the same width: the shape error explains it
    return vit_pos_embed(pos, new, new)


def few(keys: list[str], n: int = 4) -> str:
    """``a, b, c, d and 7 more (11 keys)``; ``none`` when empty."""
    if not keys:
        return "none"
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more + f" ({len(keys)} key{'s' * (len(keys) != 1)})"


def fit_error(
    where: str, conv: Converted, target: dict[str, torch.Tensor]
) -> CheckpointError | None:
    """None when ``conv.state`` fits ``target`` exactly; else an error naming the missing and
    unexpected keys, the shapes and the kinds of number (:func:`dtype_mismatches`) that differ
    and what to change."""
    state = conv.state
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    shapes = [k for k in sorted(set(state) & set(target)) if state[k].shape != target[k].shape]
    dtypes = dtype_mismatches(state, target)
    if not (missing or unexpected or shapes or dtypes):
        return None
    lines = [
        f"{where} ({conv.source} keys) does not fit this backbone: missing {few(missing)}; "
        f"unexpected {few(unexpected)}"
    ]
    if shapes:
        shown = [f"{k} {tuple(state[k].shape)} vs ours {tuple(target[k].shape)}" for k in shapes]
        lines.append(f"shapes differ: {few(shown, 3)}")
    if dtypes:
        lines.append(
            f"kinds of number differ: {few(dtypes, 3)}; weights are floating-point numbers, and "
            "integers or booleans in their place would be cast silently: this is not a file "
            "of weights for this backbone"
        )
    lines += _advice(state, target, shapes) or [
        "Check backbone.name / depths / widths / stem against the checkpoint's architecture."
    ]
    return CheckpointError("\n".join(lines))


def dtype_mismatches(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> list[str]:
    """``KEY is int8, ours float32`` for each tensor whose kind differs from ours: an integer,
    boolean or complex tensor where we keep floating-point weights, or the reverse (a float
    where we keep a counter). Precisions of one kind (float16, float64) are cast, as usual."""
    out = []
    for key in sorted(set(state) & set(target)):
        got, ours = state[key], target[key]
        if got.is_complex() or got.is_floating_point() != ours.is_floating_point():
            kinds = (str(t.dtype).removeprefix("torch.") for t in (got, ours))
            out.append("{} is {}, ours {}".format(key, *kinds))
    return out


def _advice(
    state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], shapes: list[str]
) -> list[str]:
    advice = []
    for key in shapes:
        got, ours = state[key].shape, target[key].shape
        if len(got) != len(ours):
            continue  # another rank altogether: the shapes line says it, no advice fits
        if re.fullmatch(STEM_KEYS, key):
            if "patch" not in key and got[-1] == 7 and ours[-1] == 3:
                advice.append(
                    "The checkpoint has the ImageNet 7x7 stem and this backbone the small-image "
                    "3x3 stem: set backbone.stem=imagenet (auto picks the small stem for <= 64 px)."
                )
            elif "patch" not in key and got[-1] == 3 and ours[-1] == 7:
                advice.append("The checkpoint has the small 3x3 stem: set backbone.stem=small.")
            if got[1] != ours[1]:
                advice.append(
                    f"The checkpoint takes {got[1]}-channel images and this backbone "
                    f"{ours[1]}-channel ones: use data of {got[1]} channels."
                )
        if key.endswith("patch_embed.proj.weight") and got[-1] != ours[-1]:  # a ViT's stem
            advice.append(f"The checkpoint has {got[-1]}-px patches and this ViT {ours[-1]}-px.")
    guess = guess_architecture(state)
    if guess and (set(state) != set(target) or any("patch" in a for a in advice)):
        advice.append(f"The checkpoint looks like {guess}.")
    return advice


def guess_architecture(state: dict[str, torch.Tensor]) -> str | None:
    """What a (mapped) state dict looks like, as advice: ``backbone.name=resnet50`` ..."""
    blocks: dict[int, set[int]] = {}
    for key in state:
        m = re.search(r"(?:^|\.)layer(\d)\.(\d+)\.", key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if blocks:
        depths = tuple(len(blocks.get(i, ())) for i in (1, 2, 3, 4))
        bottleneck = any(k.endswith("layer1.0.conv3.weight") for k in state)
        names = {
            ((2, 2, 2, 2), False): "resnet18",
            ((3, 4, 6, 3), False): "resnet34",
            ((3, 4, 6, 3), True): "resnet50",
            ((3, 4, 23, 3), True): "resnet101",
            ((3, 8, 36, 3), True): "resnet152",
        }
        name = names.get((depths, bottleneck))
        kind = "Bottleneck" if bottleneck else "BasicBlock"
        ours = f": set backbone.name={name}" if name in ("resnet18", "resnet34", "resnet50") else ""
        return f"a ResNet with {kind} depths {list(depths)}" + (f" ({name}){ours}" if name else "")
    patch = next((v for k, v in state.items() if k.endswith("patch_embed.proj.weight")), None)
    if patch is not None and patch.ndim == 4:
        dim, size = patch.shape[0], patch.shape[-1]
        depth = len({k.split("blocks.")[1].split(".")[0] for k in state if "blocks." in k})
        fits = [n for n, (d, dp, _h, p) in VIT_SIZES.items() if (d, dp, p) == (dim, depth, size)]
        hint = f": set backbone.name={fits[0]}" if fits else " (no ViT of ours has this shape)"
        return f"a ViT of width {dim}, depth {depth}, {size}-px patches{hint}"
    return None
