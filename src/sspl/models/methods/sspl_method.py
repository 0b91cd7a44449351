"""SSPL as a training method: its loss on a batch and the official optimiser parameter groups."""

from __future__ import annotations

import torch
from torch import nn

from ...config import Config, OptimConfig
from ..factory import create_model
from ..sspl import SSPL, sspl_loss
from . import register_method, with_encoder_groups

__all__ = ["SSPLMethod"]


class SSPLMethod:
    """Negative-free predictive learning across two views (the paper's method)."""

    name = "sspl"

    def build(self, config: Config, *, pretrained: bool = True) -> nn.Module:
        return create_model(config.model, pretrained=pretrained)

    def loss(self, model: SSPL, batch: dict, config: Config) -> tuple[torch.Tensor, dict[str, float]]:
        if "feat_view1" in batch:  # data.cache_visual: the views are feature maps (stored as float16)
            v1 = v2 = None
            features = (batch["feat_view1"].float(), batch["feat_view2"].float())
        else:
            v1, v2 = batch["frame_view1"], batch["frame_view2"]
            features = None
        loss, out = sspl_loss(
            model,
            v1,
            v2,
            batch.get("spect"),
            audio_patch_embeddings=batch.get("audio_emb"),
            visual_features=features,
        )
        z_std = float("nan")  # undefined for one sample (a last validation batch of 1)
        if out.z1.shape[0] > 1:
            with torch.no_grad():
                # SimSiam's collapse indicator: the std of the normalised projections (1/sqrt(d) when healthy)
                z_std = torch.nn.functional.normalize(out.z1.detach(), dim=1).std(dim=0).mean().item()
        return loss, {"z_std": z_std}

    def param_groups(self, model: SSPL, optim: OptimConfig) -> list[dict]:
        """The official groups: ``g``; PCM convolutions and batch norms; PCM rates (no weight decay);
        SimSiam head (``lr_head``); plus trained encoders when the config trains them."""
        groups = [
            {"name": "audio_transform", "params": list(model.audio_transform.parameters()), "lr": optim.lr}
        ]
        if model.pcm is not None:
            rates = list(model.pcm.feedback_rate) + list(model.pcm.feedforward_rate)
            rate_ids = {id(p) for p in rates}
            convs = [p for p in model.pcm.parameters() if id(p) not in rate_ids]
            groups.append({"name": "pcm", "params": convs, "lr": optim.lr})
            groups.append({"name": "pcm_rates", "params": rates, "lr": optim.lr, "weight_decay": 0.0})
        groups.append({"name": "head", "params": list(model.head.parameters()), "lr": optim.lr_head})
        return with_encoder_groups(groups, model, optim)


register_method(SSPLMethod())
