"""Numerical interop check of medtrain's UNet3D training step against PyTorch.

    python tests/interop_torch.py DIR

DIR holds the bundle written by tests/test_interop_torch.c (or by
`bench_train_step --dump DIR`):
    weights.safetensors  medtrain's initial state_dict; __metadata__ "unet3d"
                         (JSON kwargs of experiments/unet3d_torch.py's UNet3D)
                         and "loss" (JSON Dice-CE options)
    batch.safetensors    "image" (N, Cin, D, H, W) f32, "label" (N, 1, D, H, W) u8
    grads.safetensors    medtrain's "loss" (0-d), "logits", and every parameter's
                         gradient after one backward, under the parameter's name

The weights are loaded into the PyTorch twin with strict=True, the batch runs
in training mode, the same MONAI-style Dice-CE loss is computed and
back-propagated, and then
    loss:      |ours - torch| <= 1e-4 * |torch|
    logits:    max |ours - torch| / max |torch| < 1e-4   (diagnostic for the forward)
    gradients: max |ours - torch| / max |torch| < 1e-3   for every parameter,
               except gradients that are exactly zero in exact arithmetic
               (conv biases before an instance/group norm: torch's max is
               below 1e-6 x the model's largest gradient), where ours must
               stay below 1e-5 x that largest gradient
Exit status 0 when everything agrees, 1 with a report of every mismatch
otherwise, 2 on a usage or bundle error.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "experiments"))
from unet3d_torch import UNet3D  # noqa: E402

LOSS_RTOL = 1e-4
LOGITS_TOL = 1e-4
GRAD_TOL = 1e-3
ZERO_FRAC = 1e-6
ZERO_TOL = 1e-5


def dice_ce(logits, label, opt):
    """MONAI DiceCELoss(softmax=True, to_onehot_y=True) as losses/losses.c computes it.

    Dice: softmax over channels, one-hot target, background channel dropped
    unless include_background; per (sample, class) [or per class with batch]
    f = 1 - (2 sum(p t) + smooth_nr) / (sum t + sum p + smooth_dr), averaged.
    CE: mean over voxels of -log softmax at the label.
    """
    c = logits.shape[1]
    lab = label[:, 0].long()
    p = torch.softmax(logits, 1)
    t = F.one_hot(lab, c).movedim(-1, 1).to(logits.dtype)
    if not opt["include_background"] and c > 1:
        p, t = p[:, 1:], t[:, 1:]
    dims = list(range(2, logits.dim()))
    if opt["batch"]:
        dims = [0] + dims
    inter = (p * t).sum(dims)
    den = t.sum(dims) + p.sum(dims)
    dice = (1.0 - (2.0 * inter + opt["smooth_nr"]) / (den + opt["smooth_dr"])).mean()
    ce = F.cross_entropy(logits, lab)
    return opt["lambda_dice"] * dice + opt["lambda_ce"] * ce


def rel_err(ours, ref):
    scale = ref.abs().max().item()
    diff = (ours - ref).abs().max().item()
    return diff / scale if scale > 0 else diff, diff, scale


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    d = argv[1]
    try:
        with safe_open(os.path.join(d, "weights.safetensors"), "pt") as f:
            meta = f.metadata() or {}
        cfg = json.loads(meta["unet3d"])
        lopt = json.loads(meta["loss"])
        weights = load_file(os.path.join(d, "weights.safetensors"))
        batch = load_file(os.path.join(d, "batch.safetensors"))
        ours = load_file(os.path.join(d, "grads.safetensors"))
    except (OSError, KeyError, ValueError) as e:
        print(f"interop_torch: cannot read the bundle in {d}: {e!r}", file=sys.stderr)
        return 2

    torch.manual_seed(0)
    model = UNet3D(**cfg)
    model.load_state_dict(weights, strict=True)
    model.train()
    x, y = batch["image"], batch["label"]
    logits = model(x)
    loss = dice_ce(logits, y, lopt)
    loss.backward()

    failures = []
    lt, lo = loss.item(), ours["loss"].item()
    lrel = abs(lo - lt) / max(abs(lt), 1e-30)
    print(f"loss: medtrain {lo:.8f}  torch {lt:.8f}  rel diff {lrel:.2e} (tol {LOSS_RTOL:g})")
    if not lrel <= LOSS_RTOL:
        failures.append(f"loss differs: medtrain {lo!r} vs torch {lt!r} (rel {lrel:.3e})")

    if "logits" in ours:
        r, diff, scale = rel_err(ours["logits"], logits.detach())
        print(f"logits: max abs diff {diff:.3e}, max |torch| {scale:.3e}, rel {r:.2e} (tol {LOGITS_TOL:g})")
        if not r < LOGITS_TOL:
            failures.append(f"logits differ: rel {r:.3e}")

    params = dict(model.named_parameters())
    missing = [n for n in params if n not in ours]
    extra = [n for n in ours if n not in params and n not in ("loss", "logits")]
    for n in missing:
        failures.append(f"gradient of {n} missing from the bundle")
    for n in extra:
        failures.append(f"bundle has gradient {n}, which the torch model lacks")
    # Conv biases right before an instance/group norm have an exact gradient
    # of zero (the norm removes the per-channel mean), so both sides hold
    # float rounding noise there; a gradient whose torch value lies below
    # ZERO_FRAC of the largest gradient of the model is checked for being
    # that small on our side too instead of relatively.
    gmax = max((p.grad.abs().max().item() for p in params.values() if p.grad is not None), default=0.0)
    worst = (0.0, "")
    n_zero = 0
    for n, p in params.items():
        if n in missing:
            continue
        g = ours[n]
        if p.grad is None:
            failures.append(f"{n}: torch computed no gradient")
            continue
        if tuple(g.shape) != tuple(p.grad.shape):
            failures.append(f"{n}: gradient shape {tuple(g.shape)} vs torch {tuple(p.grad.shape)}")
            continue
        r, diff, scale = rel_err(g, p.grad)
        if scale <= ZERO_FRAC * gmax:
            n_zero += 1
            ours_max = g.abs().max().item()
            if not ours_max <= ZERO_TOL * gmax:
                failures.append(f"{n}: torch's gradient is ~0 (max {scale:.3e}) but ours reaches "
                                f"{ours_max:.3e} (> {ZERO_TOL:g} x largest gradient {gmax:.3e})")
            continue
        if r > worst[0]:
            worst = (r, n)
        if not r < GRAD_TOL:
            failures.append(f"{n}: gradient max abs diff {diff:.3e} / max |torch| {scale:.3e} = {r:.3e}")
    print(f"gradients: {len(params)} parameters compared, worst rel {worst[0]:.2e} ({worst[1]}) "
          f"(tol {GRAD_TOL:g}); {n_zero} with an exact-zero gradient (both sides below "
          f"{ZERO_TOL:g} x largest gradient {gmax:.3e})")
    if failures:
        print("INTEROP FAILED:", file=sys.stderr)
        for f in failures:
            print("  " + f, file=sys.stderr)
        return 1
    print("interop OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
