"""Known weights: SHA-256 checks, cache, environment variables, download and the offline message.

The real files cannot be fetched here, so each test registers a stand-in whose published digest prefix is
that of a file the test writes (random weights of the real architecture).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import os
import re
import stat
import time

import pytest
import torch
import torchvision

from sspl import SSPLConfig, create_model, weights
from sspl.errors import WeightsError
from sspl.models.encoders import VGG16Trunk, VGGishTrunk


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SSPL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    for known in weights.KNOWN_WEIGHTS.values():
        monkeypatch.delenv(known.env_var, raising=False)
        if known.pin_env_var:
            monkeypatch.delenv(known.pin_env_var, raising=False)
    return tmp_path / "cache"


def register(monkeypatch, name: str, path, **changes):
    """Pretend ``path`` is the published file of ``name`` (its digest becomes the expected one)."""
    digest = weights.sha256_file(path)
    pinned = {"sha256": digest} if weights.KNOWN_WEIGHTS[name].sha256 else {}
    known = dataclasses.replace(
        weights.KNOWN_WEIGHTS[name], sha256_prefix=digest[:8], **{**pinned, **changes}
    )
    monkeypatch.setitem(weights.KNOWN_WEIGHTS, name, known)
    return known


@pytest.fixture(scope="module")
def _files(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    vgg = root / "vgg16-random.pth"
    # torchvision's features plus a (shrunken) classifier key: a whole-network checkpoint as published
    state = {
        f"features.{k}": v for k, v in torchvision.models.vgg16(weights=None).features.state_dict().items()
    }
    state["classifier.0.weight"] = torch.zeros(4, 4)
    torch.save(state, vgg)
    vggish = root / "vggish-random.pth"
    torch.save(VGGishTrunk().state_dict(), vggish)
    return vgg, vggish


@pytest.fixture
def vgg16_file(_files, tmp_path):
    path = tmp_path / _files[0].name
    path.write_bytes(_files[0].read_bytes())
    return path


@pytest.fixture
def vggish_file(_files, tmp_path):
    path = tmp_path / _files[1].name
    path.write_bytes(_files[1].read_bytes())
    return path


def test_sha256_file_is_sha256(tmp_path):
    # FIPS 180-2 test vector, then a file larger than one read chunk (hashlib on the whole bytes agrees)
    small = tmp_path / "abc"
    small.write_bytes(b"abc")
    assert weights.sha256_file(small) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = tmp_path / "big"
    data = bytes(range(256)) * 5000  # 1.28 MB: two 1 MiB chunks
    big.write_bytes(data)
    assert weights.sha256_file(big) == hashlib.sha256(data).hexdigest()
    assert weights.sha256_file(big, chunk=1000) == hashlib.sha256(data).hexdigest()


def test_env_var_path_is_verified_and_used(cache, monkeypatch, vgg16_file, tmp_path):
    known = register(monkeypatch, "imagenet", vgg16_file)
    monkeypatch.setenv(known.env_var, str(vgg16_file))
    assert weights.resolve("imagenet") == vgg16_file
    bad = tmp_path / "bad.pth"
    bad.write_bytes(vgg16_file.read_bytes()[:-10] + b"0123456789")
    monkeypatch.setenv(known.env_var, str(bad))
    with pytest.raises(WeightsError, match=r"bad\.pth: SHA-256 .* does not match"):
        weights.resolve("imagenet")
    # an explicit path comes before the environment variable
    assert weights.resolve("imagenet", vgg16_file) == vgg16_file


def test_corrupt_file_is_rejected_with_its_digest(cache, monkeypatch, vgg16_file, tmp_path):
    register(monkeypatch, "imagenet", vgg16_file)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(vgg16_file.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(WeightsError, match=r"bad\.pth: SHA-256 .* does not match"):
        weights.resolve("imagenet", bad)


def test_full_digest_is_checked_when_pinned(cache, monkeypatch, vgg16_file):
    register(monkeypatch, "imagenet", vgg16_file, sha256="0" * 64)
    with pytest.raises(WeightsError, match="does not match"):
        weights.resolve("imagenet", vgg16_file)


def test_missing_env_file_names_it_and_how_to_get_it(cache, monkeypatch, tmp_path):
    monkeypatch.setenv("SSPL_VGGISH_WEIGHTS", str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsError) as e:
        weights.resolve("audioset")
    msg = str(e.value)
    assert "missing.pth" in msg and "vggish-10086976.pth" in msg and "SSPL_VGGISH_WEIGHTS" in msg
    assert "github.com/harritaylor/torchvggish" in msg


def test_offline_download_fails_with_a_clear_message(cache, monkeypatch, tmp_path):
    url = (tmp_path / "no-such-server" / "vgg16-397923af.pth").as_uri()
    monkeypatch.setitem(
        weights.KNOWN_WEIGHTS, "imagenet", dataclasses.replace(weights.KNOWN_WEIGHTS["imagenet"], url=url)
    )
    with pytest.raises(
        WeightsError, match=r"cannot download vgg16-397923af\.pth .* Offline\? .*SSPL_VGG16_WEIGHTS"
    ):
        weights.resolve("imagenet")
    assert not any(cache.glob("*")) if cache.exists() else True  # no partial file left in the cache
    with pytest.raises(WeightsError, match="not cached"):
        weights.resolve("imagenet", download=False)


def test_download_verifies_caches_and_reuses(cache, monkeypatch, vggish_file):
    register(monkeypatch, "audioset", vggish_file, url=vggish_file.as_uri())
    first = weights.resolve("audioset")
    assert first == cache / "vggish-10086976.pth" and first.read_bytes() == vggish_file.read_bytes()
    vggish_file.unlink()  # the "server" is gone: the cached copy is used
    assert weights.resolve("audioset") == first
    assert weights.cached_path("audioset") == first


def test_download_of_a_wrong_file_is_not_cached(cache, monkeypatch, vggish_file, vgg16_file):
    register(monkeypatch, "audioset", vggish_file, url=vgg16_file.as_uri())
    cache.mkdir(parents=True)
    stale = cache / ".vggish-10086976.pth.x1y2.part"
    stale.write_bytes(b"left by a killed download")
    old = time.time() - weights.STALE_PART_SECONDS - 60
    os.utime(stale, (old, old))
    with pytest.raises(
        WeightsError, match=r"vgg16-random\.pth sent a file whose SHA-256 does not match .* nothing"
    ):
        weights.resolve("audioset")
    assert list(cache.iterdir()) == []  # neither the wrong file nor the stale part


def test_another_process_s_download_in_progress_is_left_alone(cache, monkeypatch, vggish_file):
    # DDP ranks share the cache and download at the same time: a fresh part file may be in use
    register(monkeypatch, "audioset", vggish_file, url=vggish_file.as_uri())
    cache.mkdir(parents=True)
    busy = cache / ".vggish-10086976.pth.a1b2.part"
    busy.write_bytes(b"being written by another rank")
    assert weights.resolve("audioset") == cache / "vggish-10086976.pth"
    assert busy.read_bytes() == b"being written by another rank"


def test_a_downloaded_file_is_readable_by_the_cache_s_other_users(cache, monkeypatch, vggish_file):
    register(monkeypatch, "audioset", vggish_file, url=vggish_file.as_uri())
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(weights.resolve("audioset").stat().st_mode) == 0o666 & ~mask


def test_a_cache_that_cannot_take_the_file_is_not_called_offline(cache, monkeypatch, vggish_file, tmp_path):
    register(monkeypatch, "audioset", vggish_file, url=vggish_file.as_uri())
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("SSPL_CACHE", str(blocker / "cache"))
    with pytest.raises(
        WeightsError, match=r"cache folder .*a_file/cache cannot take vggish-10086976\.pth"
    ) as e:
        weights.resolve("audioset")
    assert "Offline" not in str(e.value)


def test_a_corrupt_copy_in_the_cache_does_not_hide_a_good_one(cache, monkeypatch, vggish_file, tmp_path):
    register(monkeypatch, "audioset", vggish_file)
    cache.mkdir(parents=True)
    (cache / "vggish-10086976.pth").write_bytes(vggish_file.read_bytes()[:1000])
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "vggish-10086976.pth").write_bytes(vggish_file.read_bytes())
    assert weights.resolve("audioset") == hub / "vggish-10086976.pth"
    (hub / "vggish-10086976.pth").unlink()
    path, message = weights.status("audioset")
    assert path is None and "vggish-10086976.pth: SHA-256" in message and "does not match" in message


def test_status_says_a_folder_is_a_folder(cache, monkeypatch, tmp_path):
    monkeypatch.setenv("SSPL_VGGISH_WEIGHTS", str(tmp_path))
    path, message = weights.status("audioset")
    assert path is None and f"$SSPL_VGGISH_WEIGHTS={tmp_path} is a folder, not a file" in message


def test_torch_hub_cache_is_reused(cache, monkeypatch, vgg16_file, tmp_path):
    register(monkeypatch, "imagenet", vgg16_file)
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "vgg16-397923af.pth").write_bytes(vgg16_file.read_bytes())
    assert weights.resolve("imagenet") == hub / "vgg16-397923af.pth"


def test_encoder_loading_takes_trunk_keys_and_rejects_other_architectures(cache, vgg16_file, vggish_file):
    trunk = VGG16Trunk()
    weights.load_visual_encoder_weights(trunk, str(vgg16_file))
    ref = torch.load(vgg16_file, weights_only=True)
    assert torch.equal(trunk.features[28].weight, ref["features.28.weight"])
    with pytest.raises(WeightsError, match="not visual encoder weights"):
        weights.load_visual_encoder_weights(VGG16Trunk(), str(vggish_file))
    with pytest.raises(WeightsError, match="not found"):
        weights.load_audio_encoder_weights(VGGishTrunk(), "/nonexistent/vggish.pth")


def test_create_model_loads_the_named_encoder_weights(cache, monkeypatch, vgg16_file, vggish_file):
    register(monkeypatch, "imagenet", vgg16_file)
    monkeypatch.setenv("SSPL_VGG16_WEIGHTS", str(vgg16_file))
    model = create_model(SSPLConfig(pcm=False, audio_weights=str(vggish_file)))
    ref_v = torch.load(vgg16_file, weights_only=True)
    ref_a = torch.load(vggish_file, weights_only=True)
    assert torch.equal(model.visual_encoder.features[0].weight, ref_v["features.0.weight"])
    assert torch.equal(model.audio_encoder.embeddings[4].weight, ref_a["embeddings.4.weight"])
    assert not any(p.requires_grad for p in model.visual_encoder.parameters())


def test_a_checkpoint_names_published_encoders_and_restores_them_from_the_cache(
    cache, monkeypatch, vgg16_file, vggish_file, tmp_path
):
    from sspl.config import Config, apply_overrides
    from sspl.engine.checkpoint import load_checkpoint, restore_model, save_checkpoint
    from sspl.models.methods import get_method

    known = register(monkeypatch, "imagenet", vgg16_file)
    monkeypatch.setenv(known.env_var, str(vgg16_file))
    config = apply_overrides(Config(), ["model.pcm=false", f"model.audio_weights={vggish_file}"])
    model = get_method("sspl").build(config)
    save_checkpoint(tmp_path / "c.pt", model=model, config=config, epoch=1, step=2)
    ckpt = load_checkpoint(tmp_path / "c.pt")
    # the published VGG16 is named, not stored; VGGish from a file path of the user's is stored
    assert ckpt["encoder_sources"] == {
        "visual_encoder": {
            "weights": "imagenet",
            "file": known.filename,
            "sha256_prefix": known.sha256_prefix,
        }
    }
    assert not any(k.startswith("visual_encoder.") for k in ckpt["model"])
    assert any(k.startswith("audio_encoder.") for k in ckpt["model"])
    restored, _ = restore_model(ckpt)
    state = restored.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value), key
    # without the published file the checkpoint cannot be restored, and says what is missing
    monkeypatch.setenv(known.env_var, str(tmp_path / "gone.pth"))
    with pytest.raises(WeightsError, match=r"gone\.pth: .* not found"):
        restore_model(ckpt)


def test_unknown_weights_name():
    with pytest.raises(WeightsError, match="unknown weights"):
        weights.resolve("imagenet22k")


def test_status_reports_cache_env_and_corruption_without_downloading(cache, monkeypatch, vggish_file):
    path, message = weights.status("audioset")
    assert path is None and message.startswith("not cached;") and "SSPL_VGGISH_WEIGHTS" in message
    register(monkeypatch, "audioset", vggish_file)
    cache.mkdir(parents=True)
    cached = cache / "vggish-10086976.pth"
    cached.write_bytes(vggish_file.read_bytes())
    assert weights.status("audioset") == (cached, f"{cached} (cached, SHA-256 checked)")
    cached.write_bytes(b"truncated")
    path, message = weights.status("audioset")
    assert path is None and "does not match" in message
    monkeypatch.setenv("SSPL_VGGISH_WEIGHTS", str(vggish_file))
    assert weights.status("audioset")[0] == vggish_file


def test_cli_lists_and_fetches(cache, monkeypatch, vggish_file, tmp_path, capsys):
    import json

    from sspl.cli import main

    assert main(["weights", "--json"]) == 0  # listing missing files is not an error
    summary = json.loads(capsys.readouterr().out)
    listed = summary["weights"]
    assert set(listed) == {"imagenet", "imagenet-resnet18", "audioset"} and listed["imagenet"]["path"] is None
    assert (summary["command"], summary["verb"], summary["count"], summary["missing"]) == (
        "weights",
        "Found",
        0,
        3,
    )
    assert summary["next"] == "sspl weights --fetch imagenet imagenet-resnet18 audioset"
    assert main(["weights"]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "sspl weights: found 0, missing 3",
        "Found 0 weight files -- next: sspl weights --fetch imagenet imagenet-resnet18 audioset",
    ]
    for name in ("imagenet", "imagenet-resnet18"):
        offline = (tmp_path / "no-such-server" / weights.KNOWN_WEIGHTS[name].filename).as_uri()
        monkeypatch.setitem(
            weights.KNOWN_WEIGHTS, name, dataclasses.replace(weights.KNOWN_WEIGHTS[name], url=offline)
        )
    register(monkeypatch, "audioset", vggish_file, url=vggish_file.as_uri())
    assert main(["weights", "--fetch", "audioset"]) == 0
    assert (cache / "vggish-10086976.pth").read_bytes() == vggish_file.read_bytes()
    assert main(["weights", "--fetch"]) == 1  # imagenet cannot be downloaded
    assert "Offline?" in capsys.readouterr().out
    assert main(["weights", "nonsense"]) == 1
    assert "unknown weights nonsense" in capsys.readouterr().err


def test_the_published_vgg16_digest_is_pinned_in_full():
    known = weights.KNOWN_WEIGHTS["imagenet"]
    # torchvision names the file after the first 8 hex digits of this SHA-256 (553,433,881 bytes)
    assert known.sha256 == "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0"
    assert (
        known.sha256.startswith(known.sha256_prefix) and known.filename == f"vgg16-{known.sha256_prefix}.pth"
    )


def test_cli_listing_fails_on_a_broken_file_not_on_one_never_fetched(cache, monkeypatch, vggish_file, capsys):
    from sspl.cli import main

    register(monkeypatch, "audioset", vggish_file)
    assert main(["weights", "audioset"]) == 0  # never fetched: a normal state
    assert not weights.misconfigured("audioset")
    monkeypatch.setenv("SSPL_VGGISH_WEIGHTS", str(cache / "nowhere.pth"))
    assert main(["weights", "audioset"]) == 1  # the variable names a file that is not there
    assert "SSPL_VGGISH_WEIGHTS=" in capsys.readouterr().out and weights.misconfigured("audioset")
    monkeypatch.delenv("SSPL_VGGISH_WEIGHTS")
    cache.mkdir(parents=True)
    (cache / "vggish-10086976.pth").write_bytes(b"truncated")
    assert main(["weights", "audioset"]) == 1  # a corrupt cached copy
    assert "does not match" in capsys.readouterr().out
    (cache / "vggish-10086976.pth").write_bytes(vggish_file.read_bytes())
    assert main(["weights", "audioset"]) == 0


def test_status_says_when_the_cache_folder_is_a_file(cache, monkeypatch, tmp_path):
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("x")
    monkeypatch.setenv("SSPL_CACHE", str(not_a_folder))
    path, message = weights.status("audioset")
    assert path is None and f"{not_a_folder} is a file, not a folder" in message
    assert weights.misconfigured("audioset")


def test_status_says_when_the_cache_folder_cannot_be_made_below_a_file(cache, monkeypatch, tmp_path):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("SSPL_CACHE", str(tmp_path / "afile" / "sub"))
    path, message = weights.status("audioset")
    assert (
        path is None
        and f"{tmp_path / 'afile' / 'sub'} cannot be made, {tmp_path / 'afile'} is a file" in message
    )
    assert weights.misconfigured("audioset")


class _Response:
    """What urlopen returns: ``body`` in pieces, declaring ``length`` bytes."""

    def __init__(self, body: bytes, length: int) -> None:
        self._body, self.headers = io.BytesIO(body), {"Content-Length": str(length)}

    def read(self, n: int = -1) -> bytes:
        return self._body.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def test_a_download_cut_short_says_so_and_caches_nothing(cache, monkeypatch, vggish_file):
    register(monkeypatch, "audioset", vggish_file)
    body = vggish_file.read_bytes()
    monkeypatch.setattr(weights.urllib.request, "urlopen", lambda *a, **k: _Response(body[:1000], len(body)))
    with pytest.raises(
        WeightsError, match=rf"was cut short \(1,000 of {len(body):,} bytes\); nothing was cached"
    ):
        weights.resolve("audioset")
    assert list(cache.iterdir()) == []
    monkeypatch.setattr(weights.urllib.request, "urlopen", lambda *a, **k: _Response(body, len(body)))
    assert weights.resolve("audioset").read_bytes() == body


def test_a_full_cache_disk_is_not_called_offline(cache, monkeypatch, vggish_file):
    register(monkeypatch, "audioset", vggish_file)
    body = vggish_file.read_bytes()
    monkeypatch.setattr(weights.urllib.request, "urlopen", lambda *a, **k: _Response(body, len(body)))

    class FullDisk(io.FileIO):
        def write(self, data) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(weights.os, "fdopen", lambda fd, mode: FullDisk(fd, "wb"))
    with pytest.raises(WeightsError, match=r"cache folder .*cache cannot take the file \(\[Errno 28\]") as e:
        weights.resolve("audioset")
    assert "Offline" not in str(e.value)
    assert list(cache.iterdir()) == []


def test_encoder_weights_of_another_size_name_the_shapes_and_the_setting(tmp_path):
    from sspl.models.encoders import build_visual_encoder

    path = tmp_path / "visual_encoder.pt"
    torch.save(build_visual_encoder("small_cnn", 64).state_dict(), path)
    with pytest.raises(WeightsError) as e:
        weights.load_visual_encoder_weights(build_visual_encoder("small_cnn", 128), str(path))
    message = str(e.value)
    assert message.startswith(f"{path}: shape mismatch (visual encoder): ")
    assert "features.4.0.weight is 64 x 64 x 3 x 3 in the file, 128 x 64 x 3 x 3 in the model" in message
    assert "model.visual_channels=N" in message


def test_a_weights_file_must_hold_a_state_dict_of_tensors(tmp_path):
    from sspl.weights import read_state_dict

    path = tmp_path / "frame_best.pth"
    torch.save({"module.conv.weight": torch.ones(2)}, path)
    assert list(read_state_dict(path)) == ["conv.weight"]  # DataParallel's prefix removed
    torch.save({"state_dict": {"conv.weight": torch.ones(2)}, "epoch": 3}, path)
    assert list(read_state_dict(path)) == ["conv.weight"]
    torch.save({1: torch.ones(2)}, path)
    with pytest.raises(
        WeightsError, match=r"frame_best\.pth: not a state dict of tensors \(entry 1 holds Tensor\)"
    ):
        read_state_dict(path)
    torch.save({"conv.weight": 0.5}, path)
    with pytest.raises(
        WeightsError, match=r"not a state dict of tensors \(entry 'conv.weight' holds float\)"
    ):
        read_state_dict(path)
    path.write_bytes(b"")
    with pytest.raises(WeightsError, match=r"frame_best\.pth: cannot read checkpoint \(empty file\)"):
        read_state_dict(path)


def _altered(path, monkeypatch) -> str:
    """Change one byte of ``path`` and make its digest prefix the published one again (a copy altered to
    pass the 8-hex-digit check: 32 bits); returns its new SHA-256."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    digest = weights.sha256_file(path)
    register(monkeypatch, "audioset", path)
    return digest


def test_vggish_s_full_digest_is_pinned_on_first_load_and_a_changed_copy_is_refused(
    cache, monkeypatch, vggish_file, capsys
):
    from sspl.cli import main

    register(monkeypatch, "audioset", vggish_file)
    cache.mkdir(parents=True)
    copy = cache / "vggish-10086976.pth"
    copy.write_bytes(vggish_file.read_bytes())
    pins = cache / weights.PINS_FILE
    digest = weights.sha256_file(copy)
    assert weights.pinned("audioset") == (None, "not pinned yet")
    assert weights.load_audio_encoder_weights(VGGishTrunk(), "audioset") == copy  # the first load pins it
    assert json.loads(pins.read_text()) == {"vggish-10086976.pth": digest}
    assert weights.pinned("audioset") == (digest, f"recorded in {pins}")
    recorded = pins.read_bytes()
    assert weights.load_audio_encoder_weights(VGGishTrunk(), "audioset") == copy  # the same copy passes
    assert pins.read_bytes() == recorded

    changed = _altered(copy, monkeypatch)
    expected = (
        f"{copy}: SHA-256 {changed} is not the {digest} pinned for vggish-10086976.pth (recorded in {pins}); "
        "the file changed since it was pinned. If you replaced it with a copy you trust, re-pin it: "
        f"`sspl weights --pin audioset` (or delete {pins})"
    )
    with pytest.raises(WeightsError) as e:
        weights.load_audio_encoder_weights(VGGishTrunk(), "audioset")
    assert str(e.value) == expected
    assert pins.read_bytes() == recorded  # a refused copy is not recorded
    assert weights.status("audioset") == (None, expected) and weights.misconfigured("audioset")
    assert main(["weights", "audioset"]) == 1
    assert expected in capsys.readouterr().out

    assert main(["weights", "--pin"]) == 0  # replaced on purpose: re-pinned
    assert capsys.readouterr().out.startswith(f"audioset  pinned SHA-256 {changed} of {copy}\n")
    assert json.loads(pins.read_text()) == {"vggish-10086976.pth": changed}
    assert weights.resolve("audioset") == copy


def test_a_vggish_pin_given_in_the_environment_overrides_the_recorded_one(cache, monkeypatch, vggish_file):
    register(monkeypatch, "audioset", vggish_file)
    digest = weights.sha256_file(vggish_file)
    monkeypatch.setenv("SSPL_VGGISH_WEIGHTS", str(vggish_file))
    monkeypatch.setenv("SSPL_VGGISH_SHA256", digest.upper())  # given before the first load
    assert weights.resolve("audioset") == vggish_file
    assert not (cache / weights.PINS_FILE).exists()  # a given pin is not recorded
    assert weights.pinned("audioset") == (digest, "$SSPL_VGGISH_SHA256")
    monkeypatch.setenv("SSPL_VGGISH_SHA256", "0" * 64)
    with pytest.raises(WeightsError) as e:
        weights.resolve("audioset")
    assert str(e.value) == (
        f"{vggish_file}: SHA-256 {digest} is not the {'0' * 64} pinned for vggish-10086976.pth "
        "($SSPL_VGGISH_SHA256); the file changed since it was pinned. If you replaced it with a copy you "
        "trust, set SSPL_VGGISH_SHA256 to its SHA-256 (or unset it)"
    )
    monkeypatch.delenv("SSPL_VGGISH_SHA256")
    assert weights.resolve("audioset") == vggish_file  # now recorded
    changed = _altered(vggish_file, monkeypatch)
    with pytest.raises(WeightsError, match="is not the .* pinned for vggish-10086976.pth .recorded in"):
        weights.resolve("audioset")
    monkeypatch.setenv("SSPL_VGGISH_SHA256", changed)  # the user's word overrides the record
    assert weights.resolve("audioset") == vggish_file
    monkeypatch.setenv("SSPL_VGGISH_SHA256", "10086976")
    with pytest.raises(
        WeightsError, match=r"^\$SSPL_VGGISH_SHA256=10086976: not a SHA-256 \(64 hex digits\)$"
    ):
        weights.resolve("audioset")


def test_a_downloaded_vggish_is_pinned_and_a_damaged_pin_file_is_named(cache, monkeypatch, vggish_file):
    register(monkeypatch, "audioset", vggish_file, url=vggish_file.as_uri())
    weights.resolve("audioset")
    pins = cache / weights.PINS_FILE
    assert json.loads(pins.read_text()) == {"vggish-10086976.pth": weights.sha256_file(vggish_file)}
    pins.write_text('{"vggish-10086976.pth": "not a digest"}')
    with pytest.raises(
        WeightsError, match=rf"^{re.escape(str(pins))}: not a record of pinned SHA-256 digests"
    ):
        weights.resolve("audioset")


def test_the_weights_listing_shows_each_full_digest_and_where_it_comes_from(
    cache, monkeypatch, vggish_file, capsys
):
    from sspl.cli import main

    register(monkeypatch, "audioset", vggish_file)
    assert main(["weights", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["weights"]
    assert listed["imagenet"]["sha256"] == weights.KNOWN_WEIGHTS["imagenet"].sha256
    assert listed["imagenet"]["sha256_source"] == "published"
    assert (listed["audioset"]["sha256"], listed["audioset"]["sha256_source"]) == (None, "not pinned yet")
    monkeypatch.setenv("SSPL_VGGISH_WEIGHTS", str(vggish_file))
    weights.resolve("audioset")
    assert main(["weights", "audioset"]) == 0
    digest = weights.sha256_file(vggish_file)
    assert (
        f"          SHA-256 {digest} (recorded in {cache / weights.PINS_FILE})\n" in capsys.readouterr().out
    )
    assert main(["weights", "--pin", "imagenet"]) == 1
    assert "imagenet: the full SHA-256 of vgg16-397923af.pth is published and checked; nothing to pin" in (
        capsys.readouterr().err
    )


def test_a_cache_that_takes_no_pin_does_not_stop_a_load_but_fails_an_explicit_pin(
    cache, monkeypatch, vggish_file, caplog
):
    register(monkeypatch, "audioset", vggish_file)
    monkeypatch.setenv("SSPL_VGGISH_WEIGHTS", str(vggish_file))

    def read_only(path, obj, indent=2):
        raise PermissionError(30, "Read-only file system", str(path))

    monkeypatch.setattr(weights, "atomic_save_json", read_only)
    with caplog.at_level("WARNING", logger="sspl.weights"):
        assert weights.resolve("audioset") == vggish_file
    assert (
        "cannot record the SHA-256 of vggish-10086976.pth" in caplog.text and "stays unpinned" in caplog.text
    )
    assert weights.pinned("audioset") == (None, "not pinned yet")
    with pytest.raises(WeightsError, match=r"sha256-pins\.json: cannot record the pin of .*Read-only"):
        weights.pin("audioset")
