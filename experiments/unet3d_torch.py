"""PyTorch twin of medtrain's UNet3D (layers/models/unet3d.c).

Same module tree and submodule names, so state_dict() keys and shapes equal
medtrain's mt_module_state_dict() for the same config: used for the speed
comparison and for weight interop tests.

    python experiments/unet3d_torch.py --features 2 4 --in-channels 1 --out-channels 3
prints "name shape" for every state_dict entry (shape "()" for 0-d).
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F


def make_norm(kind, ch, groups=8, affine=True, eps=1e-5, momentum=0.1):
    if kind == "batch":
        return nn.BatchNorm3d(ch, eps=eps, momentum=momentum)
    if kind == "instance":
        return nn.InstanceNorm3d(ch, eps=eps, affine=affine)
    if kind == "group":
        return nn.GroupNorm(groups, ch, eps=eps)
    if kind == "none":
        return None
    raise ValueError(f"unknown norm {kind}")


def make_act(kind, slope):
    if kind == "relu":
        return nn.ReLU()
    if kind == "leaky_relu":
        return nn.LeakyReLU(slope)
    if kind == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {kind}")


class ConvStage(nn.Module):
    """[pool] conv1 [drop1] norm1 act1 conv2 [drop2] norm2 act2, run in that order."""

    def __init__(self, cin, cout, first_stride, pool, cfg):
        super().__init__()
        self.order = []
        if pool:
            self.pool = nn.MaxPool3d(2)
            self.order.append("pool")
        for k in (1, 2):
            conv = nn.Conv3d(cin if k == 1 else cout, cout, 3, stride=first_stride if k == 1 else 1,
                             padding=1, bias=cfg["conv_bias"])
            setattr(self, f"conv{k}", conv)
            self.order.append(f"conv{k}")
            if cfg["dropout"] > 0:
                setattr(self, f"drop{k}", nn.Dropout(cfg["dropout"]))
                self.order.append(f"drop{k}")
            norm = make_norm(cfg["norm"], cout, cfg["norm_groups"], cfg["norm_affine"],
                             cfg["norm_eps"], cfg["bn_momentum"])
            if norm is not None:
                setattr(self, f"norm{k}", norm)
                self.order.append(f"norm{k}")
            setattr(self, f"act{k}", make_act(cfg["act"], cfg["act_slope"]))
            self.order.append(f"act{k}")

    def forward(self, x):
        for name in self.order:
            x = getattr(self, name)(x)
        return x


class UpsampleConv(nn.Module):
    """1x1x1 conv then x2 trilinear (align_corners=False); equal to the other order."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, 1)

    def forward(self, x):
        return F.interpolate(self.conv(x), scale_factor=2, mode="trilinear", align_corners=False)


DEFAULTS = dict(in_channels=1, out_channels=2, features=(32, 64, 128, 256, 320), norm="instance",
                norm_groups=8, norm_affine=True, norm_eps=1e-5, bn_momentum=0.1,
                act="leaky_relu", act_slope=0.01, upsample="transposed", downsample="conv",
                deep_supervision=False, dropout=0.0, conv_bias=True)


class UNet3D(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        cfg = dict(DEFAULTS)
        unknown = set(kw) - set(cfg)
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        cfg.update(kw)
        self.cfg = cfg
        f = list(cfg["features"])
        L = self.levels = len(f)
        for l in range(1, L + 1):
            cin = cfg["in_channels"] if l == 1 else f[l - 2]
            down = l > 1
            stride = 2 if down and cfg["downsample"] == "conv" else 1
            pool = down and cfg["downsample"] == "maxpool"
            setattr(self, f"enc{l}", ConvStage(cin, f[l - 1], stride, pool, cfg))
        for l in range(L - 1, 0, -1):
            chi, clo = f[l], f[l - 1]
            if cfg["upsample"] == "transposed":
                up = nn.ConvTranspose3d(chi, clo, 2, stride=2)
            else:
                up = UpsampleConv(chi, clo)
            setattr(self, f"up{l}", up)
            setattr(self, f"dec{l}", ConvStage(2 * clo, clo, 1, False, cfg))
            if cfg["deep_supervision"] and l >= 2:
                setattr(self, f"ds{l}", nn.Conv3d(clo, cfg["out_channels"], 1))
        self.head = nn.Conv3d(f[0], cfg["out_channels"], 1)

    def forward(self, x, return_ds=False):
        L = self.levels
        skips = []
        for l in range(1, L + 1):
            x = getattr(self, f"enc{l}")(x)
            if l < L:
                skips.append(x)
        ds = []
        for l in range(L - 1, 0, -1):
            x = getattr(self, f"up{l}")(x)
            x = torch.cat((x, skips[l - 1]), 1)
            x = getattr(self, f"dec{l}")(x)
            if return_ds and hasattr(self, f"ds{l}"):
                ds.append(getattr(self, f"ds{l}")(x))
        logits = self.head(x)
        if return_ds:
            return logits, ds[::-1]  # highest resolution first, as medtrain
        return logits


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--out-channels", type=int, default=2)
    p.add_argument("--features", type=int, nargs="+", default=[32, 64, 128, 256, 320])
    p.add_argument("--norm", default="instance")
    p.add_argument("--norm-groups", type=int, default=8)
    p.add_argument("--no-norm-affine", action="store_true")
    p.add_argument("--act", default="leaky_relu")
    p.add_argument("--upsample", default="transposed")
    p.add_argument("--downsample", default="conv")
    p.add_argument("--deep-supervision", action="store_true")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--no-conv-bias", action="store_true")
    a = p.parse_args()
    m = UNet3D(in_channels=a.in_channels, out_channels=a.out_channels, features=a.features,
               norm=a.norm, norm_groups=a.norm_groups, norm_affine=not a.no_norm_affine,
               act=a.act, upsample=a.upsample, downsample=a.downsample,
               deep_supervision=a.deep_supervision, dropout=a.dropout,
               conv_bias=not a.no_conv_bias)
    for k, v in m.state_dict().items():
        print(k, "(" + ", ".join(str(s) for s in v.shape) + ")")


if __name__ == "__main__":
    main()
