"""Make the EZ-VSL goldens by running the official code (github.com/stoneMo/EZ-VSL) on seeded weights.

Usage (see README.md): python make_goldens.py OFFICIAL_DIR TESTS_DIR OUT_DIR, with OFFICIAL_DIR holding the
official repository's files (model.py, train.py, test.py, utils.py, datasets.py, audio_io.py) and scipy,
scikit-learn and OpenCV importable. Nothing of the official code is copied: it is imported and run as it is,
with two substitutions recorded here: torchvision's ``resnet18(pretrained=True)`` returns a ResNet-18 holding
the seeded ImageNet stand-in (no download), and ``utils.Evaluator`` (patched in place) records the maps and thresholds its
``cal_CIOU`` receives before computing exactly what the official one computes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OFFICIAL, TESTS, OUT = (Path(a).resolve() for a in sys.argv[1:4])
sys.path[:0] = [str(OFFICIAL), str(TESTS)]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

from released_recipe import BATCH, IMAGENET_SEED, MODEL_SEED, gt_maps, inputs, seeded_state  # noqa: E402

_resnet18 = torchvision.models.resnet18
_imagenet = seeded_state(
    {k: tuple(v.shape) for k, v in _resnet18(weights=None).state_dict().items()}, IMAGENET_SEED
)


def _pretrained_resnet18(pretrained: bool = False, **kwargs):
    net = _resnet18(weights=None)
    if pretrained:
        net.load_state_dict(_imagenet)
    return net


torchvision.models.resnet18 = _pretrained_resnet18

import model as official_model  # noqa: E402
import test as official_test  # noqa: E402
import train as official_train  # noqa: E402
import utils  # noqa: E402

RECORDS: list = []


_init, _cal_ciou = utils.Evaluator.__init__, utils.Evaluator.cal_CIOU


def _recording_init(self):
    _init(self)
    self.calls = []
    RECORDS.append(self)


def _recording_cal_ciou(self, infer, gtmap, thres=0.01):
    self.calls.append((np.array(infer, copy=True), float(thres)))
    return _cal_ciou(self, infer, gtmap, thres)


# patched in place: the official class calls itself by its module-level name
utils.Evaluator.__init__, utils.Evaluator.cal_CIOU = _recording_init, _recording_cal_ciou


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    work = OUT / "work"
    frames, spect = inputs()
    gt = gt_maps()
    net = official_model.EZVSL(0.03, 512)
    state = seeded_state({k: tuple(v.shape) for k, v in net.state_dict().items()}, MODEL_SEED)
    net.load_state_dict(state)
    args = argparse.Namespace(
        model_dir=str(work),
        experiment_name="golden",
        save_visualizations=False,
        testset="flickr",
        test_data_path="",
        test_gt_path="",
        batch_size=1,
        tau=0.03,
        out_dim=512,
        alpha=0.4,
        workers=0,
        gpu=None,
        world_size=1,
        rank=0,
        node="localhost",
        port=12345,
        dist_url="",
        init_lr=1e-4,
        multiprocessing_distributed=False,
    )
    optimizer, _ = utils.build_optimizer_and_scheduler_adam(net, args)
    (work / "golden").mkdir(parents=True, exist_ok=True)
    ckp = {
        "model": {f"module.{k}": v for k, v in net.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "epoch": 20,
        "best_cIoU": 0.0,
        "best_Auc": 0.0,
    }
    torch.save(ckp, work / "golden" / "best.pth")  # the format train.py writes under DDP

    out = {}
    net.train()
    loss, savl_train = net(frames.float(), spect.float())
    loss.backward()
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    out["loss"] = np.float64(loss.item())
    out["savl_train"] = savl_train.numpy()
    out["grad_norms"] = np.array([net.get_parameter(n).grad.double().norm().item() for n in names])

    items = [(frames[i], spect[i], {"gt_map": torch.from_numpy(gt[i])}, f"clip{i}") for i in range(BATCH)]
    official_test.get_test_dataset = lambda a: items
    official_test.main(args)  # loads work/golden/best.pth, OGL with the stand-in ImageNet ResNet-18
    loader = torch.utils.data.DataLoader(items, batch_size=1, shuffle=False)
    fresh = official_model.EZVSL(0.03, 512)
    saved = torch.load(work / "golden" / "best.pth", map_location="cpu")["model"]  # as test.py loads it
    fresh.load_state_dict({k.replace("module.", ""): v for k, v in saved.items()})
    fresh.eval()  # the checkpoint's batch-norm statistics (the training forward above moved net's)
    with torch.no_grad():
        out["savl_eval"] = fresh(frames.float(), spect.float())[1].numpy()
    out["val_cIoU_AUC"] = np.array(official_train.validate(loader, fresh, args), dtype=np.float64)

    for kind, ev in zip(("av", "obj", "av_obj", "val_bicubic"), RECORDS, strict=True):
        maps = np.stack([m for m, _ in ev.calls])
        out[f"{kind}_maps_sub"] = maps[:, ::7, ::7].astype(np.float32)
        out[f"{kind}_sums"] = maps.astype(np.float64).sum(axis=(1, 2))
        out[f"{kind}_thr"] = np.array([t for _, t in ev.calls])
        out[f"{kind}_ciou"] = np.array(ev.ciou, dtype=np.float64)
        out[f"{kind}_stats"] = np.array(
            [ev.finalize_AP50(), ev.finalize_cIoU(), ev.finalize_AUC()], dtype=np.float64
        )
    np.savez_compressed(OUT / "ezvsl_golden.npz", **out)
    meta = {
        "grad_names": names,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "frames_sum": float(frames.double().sum()),
        "spect_sum": float(spect.double().sum()),
    }
    (OUT / "ezvsl_golden.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
