"""`sspl app`: the local web app, through its HTTP client side (uploads, job status, result files, bad
input) and as a page in headless Chromium (files picked, Localize clicked, the screenshot checked where the
results are drawn).

The model is the tiny small_cnn SSPL with random weights saved as a checkpoint: these tests check that the
app hands the upload to the library and serves what it wrote (the maps equal the library's own), not
accuracy. The video is the bundled real clip (5 s, 320 x 240, with sound).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

import sspl
from chromium import Chromium, find_chromium
from small_runs import save_small_run
from sspl.app import make_server
from sspl.app.form import boundary_of, parse_form
from sspl.app.jobs import JobRunner, Upload
from sspl.cli import main
from sspl.data.video import video_info, write_synthetic_video
from sspl.errors import DataError
from sspl.localize import localize_image, localize_video

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "src" / "sspl" / "assets" / "videos" / "single_source__p04SYXuBSQ.mp4"


def _save_run(folder: Path, encoder_weights: Path | None = None) -> Path:
    """A run directory with a tiny random small_cnn SSPL; with ``encoder_weights``, its config says that
    its encoders came from ``sspl synth-pretrain`` there (a SynthAV model; the files are not needed)."""
    visual, audio = (
        (None, None)
        if encoder_weights is None
        else (
            str(encoder_weights / "visual_encoder.pt"),
            str(encoder_weights / "audio_encoder.pt"),
        )
    )
    return save_small_run(folder, visual, audio)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return _save_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def loaded(run_dir):
    return sspl.load(run_dir, device="cpu")


@pytest.fixture(scope="module")
def server(loaded, run_dir):
    srv = make_server(*loaded, checkpoint=run_dir, notes=["a test model"], port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)
    assert not srv.runner.root.exists()  # every upload and result removed


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    t = np.arange(int(1.5 * 22050)) / 22050
    sf.write(
        folder / "tone.wav", 0.3 * np.sin(2 * np.pi * 330 * t) + 0.02 * rng.standard_normal(t.size), 22050
    )
    sf.write(folder / "blip.wav", 0.3 * np.sin(2 * np.pi * 330 * t[:1000]), 22050)  # 45 ms
    Image.fromarray(rng.integers(0, 256, (170, 250, 3), dtype=np.uint8)).save(folder / "frame.png")
    (folder / "notes.txt").write_text("not a video\n")
    write_synthetic_video(folder / "mute.mp4", seconds=1.0, fps=10, audio=None)
    return {p.name: p for p in folder.iterdir()}


# --------------------------------------------------------------------------------------------------
# The client side: plain HTTP
# --------------------------------------------------------------------------------------------------


def _request(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _upload(server, **files: Path) -> tuple[int, dict]:
    """POST a multipart form, as a browser's FormData does."""
    boundary = uuid.uuid4().hex
    body = b""
    for field, path in files.items():
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{path.name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + path.read_bytes()
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    status, _, reply = _request(server.url + "api/jobs", body, headers)
    return status, json.loads(reply)


def _finish(server, job_id: str, timeout: float = 120) -> tuple[dict, list[dict]]:
    """The job's last status, and every status seen while it ran."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = json.loads(_request(f"{server.url}api/jobs/{job_id}")[2])
        seen.append(status)
        if status["state"] in ("done", "error"):
            return status, seen
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} still {seen[-1]}")


def _run(server, **files: Path) -> dict:
    status, reply = _upload(server, **files)
    assert status == 202, reply
    return _finish(server, reply["id"])[0]


def _file(server, job: dict, key: str, **headers) -> tuple[int, dict, bytes]:
    return _request(f"{server.url}files/{job['id']}/{job['outputs'][key]}", headers=headers)


def test_the_page_names_the_model_and_has_the_form(server, run_dir):
    status, headers, page = _request(server.url)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    text = page.decode()
    assert str(run_dir) in text and "a test model" in text
    for element in ('id="video-file"', 'id="image-file"', 'id="audio-file"', 'id="run"', 'id="result-video"'):
        assert element in text


def test_a_video_gives_the_overlay_video_with_sound_the_maps_and_the_contact_sheet(server, loaded, tmp_path):
    status, reply = _upload(server, video=CLIP)
    assert status == 202
    job, seen = _finish(server, reply["id"])
    assert job["state"] == "done", job
    assert job["error"] is None and job["warnings"] == []
    stem = CLIP.stem
    assert job["outputs"] == {
        "heatmap_video": f"{stem}_heatmap.mp4",
        "maps": f"{stem}_maps.npy",
        "timestamps": f"{stem}_timestamps.npy",
        "contact_sheet": f"{stem}_contact.png",
    }
    # The maps are the library's own for this clip, frame for frame.
    expected = localize_video(*loaded, CLIP, progress=False)
    maps = np.load(io.BytesIO(_file(server, job, "maps")[2]))
    np.testing.assert_allclose(maps, expected.maps, atol=1e-5)
    np.testing.assert_array_equal(
        np.load(io.BytesIO(_file(server, job, "timestamps")[2])), expected.timestamps
    )
    # Progress counted every frame, never past the total.
    assert job["done"] == job["total"] == len(expected.timestamps) == 37
    assert all(s["done"] <= max(s["total"], 1) for s in seen)
    # A playable MP4 with sound at the source size, one picture per map.
    status, headers, data = _file(server, job, "heatmap_video")
    assert status == 200 and headers["Content-Type"] == "video/mp4"
    (tmp_path / "out.mp4").write_bytes(data)
    info = video_info(tmp_path / "out.mp4")
    assert info.has_audio and info.height == 240 and info.width >= 320  # the source size (+ a colour bar)
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == len(maps)
    # Byte ranges, for seeking in the browser.
    status, headers, part = _file(server, job, "heatmap_video", Range="bytes=100-199")
    assert status == 206 and part == data[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert _file(server, job, "heatmap_video", Range="bytes=-50")[2] == data[-50:]
    status, headers, _ = _file(server, job, "heatmap_video", Range=f"bytes={len(data)}-")
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"
    sheet = Image.open(io.BytesIO(_file(server, job, "contact_sheet")[2]))
    # 8 thumbnails of 320 x 240 in 2 rows of 4 (a colour bar, when drawn, widens it)
    assert sheet.format == "PNG" and sheet.width >= 4 * 320 + 3 * 4 and sheet.height >= 2 * 240


def test_an_image_and_a_sound_give_the_overlay_and_the_map(server, loaded, media):
    job = _run(server, image=media["frame.png"], audio=media["tone.wav"])
    assert job["state"] == "done", job
    assert job["outputs"] == {"overlay": "frame_overlay.png", "map": "frame_map.npy"}
    expected = localize_image(*loaded, media["frame.png"], media["tone.wav"]).raw_map
    np.testing.assert_allclose(np.load(io.BytesIO(_file(server, job, "map")[2])), expected, atol=1e-5)
    overlay = Image.open(io.BytesIO(_file(server, job, "overlay")[2]))
    # the frame's 250 x 170, plus the colour bar that image overlays carry by default
    assert overlay.format == "PNG" and overlay.size[1] == 170 and overlay.size[0] > 250


def test_a_too_short_sound_is_localized_with_the_librarys_warning(server, media):
    job = _run(server, image=media["frame.png"], audio=media["blip.wav"])
    assert job["state"] == "done"
    assert len(job["warnings"]) == 1
    assert job["warnings"][0].startswith("blip.wav: only 72")  # 1000 samples at 22.05 kHz, resampled
    assert "(45 ms at 16000 Hz); at least 0.1 s are needed" in job["warnings"][0]
    assert str(os.sep + "inputs" + os.sep) not in job["warnings"][0]  # the user's name, not the temp path


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"video": "notes.txt"}, "notes.txt: cannot open as a media container"),
        ({"video": "mute.mp4"}, "mute.mp4: no audio stream; give the sound as a separate file"),
        ({"image": "notes.txt", "audio": "tone.wav"}, "notes.txt: cannot read as an image"),
    ],
)
def test_a_bad_file_fails_the_job_with_the_librarys_one_line_message(server, media, files, message):
    job = _run(server, **{field: media[name] for field, name in files.items()})
    assert job["state"] == "error" and job["outputs"] == {}
    assert job["error"].startswith(message), job["error"]
    assert "\n" not in job["error"] and str(server.runner.root) not in job["error"]
    assert not (server.runner.root / job["id"]).exists()  # a failed job's files are gone at once


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"image": "frame.png"}, "an image needs a sound file too"),
        ({"video": "mute.mp4", "image": "frame.png"}, "upload a video, or an image and a sound"),
        ({"audio": "tone.wav"}, "upload a video, or an image and a sound"),
    ],
)
def test_a_bad_form_is_refused_with_a_message(server, media, files, message):
    status, reply = _upload(server, **{field: media[name] for field, name in files.items()})
    assert status == 400 and reply["error"].startswith(message)


def test_other_requests_are_refused_with_a_message(server, media):
    status, _, reply = _request(server.url + "api/jobs", b"x=1", {"Content-Type": "text/plain"})
    assert status == 400 and json.loads(reply)["error"].startswith("send the files as multipart/form-data")
    assert _request(server.url + "api/jobs/0123456789abcdef")[0] == 404
    assert _request(server.url + "files/0123456789abcdef/x.png")[0] == 404
    assert _request(server.url + "../etc/passwd")[0] == 404
    limit = server.max_upload_bytes
    server.max_upload_bytes = 1000
    try:
        status, reply = _upload(server, video=CLIP)
    finally:
        server.max_upload_bytes = limit
    assert status == 413 and "over the app's limit" in reply["error"]


def test_only_the_last_jobs_keep_their_files(loaded, media):
    srv = make_server(*loaded, port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.runner.keep = 1
    try:
        first = _run(srv, image=media["frame.png"], audio=media["tone.wav"])
        assert _file(srv, first, "overlay")[0] == 200
        second = _run(srv, image=media["frame.png"], audio=media["tone.wav"])
        assert _file(srv, first, "overlay")[0] == 404 and _file(srv, second, "overlay")[0] == 200
        assert json.loads(_request(f"{srv.url}api/jobs/{first['id']}")[2])["state"] == "expired"
        assert sorted(p.name for p in srv.runner.root.iterdir()) == [second["id"]]
    finally:
        srv.shutdown()
        srv.server_close()
    assert not srv.runner.root.exists()


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def test_sspl_app_serves_on_localhost_and_leaves_nothing_behind(media, tmp_path):
    temp, cwd = tmp_path / "tmp", tmp_path / "cwd"
    temp.mkdir()
    cwd.mkdir()
    synth_run = _save_run(tmp_path / "run", encoder_weights=tmp_path / "synth_encoders")
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(ROOT / "src")}
    argv = [sys.executable, "-m", "sspl.cli", "app", "--checkpoint", str(synth_run), "--port", "0"]
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("sspl app: open http://127.0.0.1:"), (line, proc.stderr.read())
        url = line.split()[3]

        class Server:  # what the helpers above need
            pass

        Server.url = url
        page = _request(url)[2].decode()
        assert "This model was trained on SynthAV (synthetic scenes): its maps on real images" in page
        job = _run(Server, image=media["frame.png"], audio=media["tone.wav"])
        assert job["state"] == "done" and _file(Server, job, "overlay")[0] == 200
        assert len(list(temp.glob("sspl-app-*/*/outputs/frame_overlay.png"))) == 1  # while the app runs
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    err = proc.stderr.read()
    assert rc == 0 and "sspl app: stopped" in err
    assert "sspl app: warning: This model was trained on SynthAV" in err
    # Its folder is gone (torch may leave its own empty cache folder in TMPDIR); nothing in the working folder.
    assert list(temp.glob("sspl-app-*")) == [] and list(cwd.iterdir()) == []


def test_sspl_app_json_says_where_it_listens(run_dir, monkeypatch, capsys):
    import sspl.app

    class Stopped:  # stands in for the server: the app is stopped as soon as it starts
        url = "http://127.0.0.1:1234/"

        def serve_forever(self):
            raise KeyboardInterrupt

        def server_close(self):
            pass

    monkeypatch.setattr(sspl.app, "make_server", lambda *a, **k: Stopped())
    assert main(["app", "--checkpoint", str(run_dir), "--json"]) == 0
    ready = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert ready == {"command": "app", "url": Stopped.url, "checkpoint": str(run_dir), "warnings": []}


def test_sspl_app_says_when_it_cannot_start(run_dir, tmp_path, capsys):
    assert main(["app", "--checkpoint", str(tmp_path / "none")]) == 1
    assert "sspl app: error:" in (err := capsys.readouterr().err) and "no such checkpoint" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["app", "--checkpoint", str(run_dir), "--port", str(port)]) == 1
    assert f"127.0.0.1:{port}: cannot listen there: in use; choose another --port" in capsys.readouterr().err
    assert main(["app", "--checkpoint", str(run_dir), "--port", "70000"]) == 1
    assert "--port must be between 0 and 65535" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# The page in a real browser
# --------------------------------------------------------------------------------------------------

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed: `make test` installs it with apt-get when run as root "
    "(else: apt-get install chromium, or set SSPL_CHROMIUM to a Chromium binary)",
)

RESULTS_READY = """(() => {
  const state = document.body.dataset.state, video = document.getElementById('result-video');
  const sheet = document.getElementById('result-contact');
  if (state === 'error') return 'error';
  return state === 'done' && video.readyState >= 2 && sheet.complete && sheet.naturalWidth > 0 && 'done';
})()"""


IMAGE_READY = """(() => {
  const state = document.body.dataset.state, overlay = document.getElementById('result-overlay');
  return state === 'error' ? 'error' : state === 'done' && overlay.complete && overlay.naturalWidth > 0 && 'done';
})()"""


def _region_difference(shot: Image.Image, box: tuple[int, int, int, int], expected: Image.Image) -> float:
    """Mean absolute difference (0-255) between the screenshot in ``box`` and ``expected`` drawn there."""
    crop = np.asarray(shot.crop(box), dtype=np.float32)
    drawn = np.asarray(
        expected.convert("RGB").resize(shot.crop(box).size, Image.Resampling.BILINEAR), np.float32
    )
    return float(np.abs(crop - drawn).mean())


@needs_chromium
def test_the_page_in_chromium_uploads_a_video_and_shows_the_results(server, media, tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()
    with Chromium(CHROMIUM, profile) as browser:
        browser.open(server.url)
        # Bad input first: the page shows the library's message.
        browser.choose_files("#video-file", media["notes.txt"])
        browser.js("document.getElementById('run').click()")
        assert browser.wait_for(RESULTS_READY) == "error"
        assert browser.js("document.getElementById('error').textContent").startswith(
            "notes.txt: cannot open as a media container"
        )
        error_box = browser.rect("#error")
        red = np.asarray(browser.screenshot().crop(error_box), dtype=np.int16)
        assert (np.abs(red - [217, 48, 37]).sum(axis=2) < 30).mean() > 0.01  # its red border is drawn

        browser.choose_files("#video-file", CLIP)
        browser.js("document.getElementById('run').click()")
        assert browser.wait_for(RESULTS_READY) == "done"
        time.sleep(0.3)  # let the first video frame reach the compositor
        shot = browser.screenshot()
        shot.save(tmp_path / "page.png")
        dom = browser.js("document.documentElement.outerHTML")
        video_box, sheet_box = browser.rect("#result-video"), browser.rect("#result-contact")

        # An image and a sound, after switching the form.
        browser.js("document.getElementById('mode-image').click()")
        assert browser.js(
            "document.getElementById('video-row').hidden && !document.getElementById('image-row').hidden"
        )
        browser.choose_files("#image-file", media["frame.png"])
        browser.choose_files("#audio-file", media["tone.wav"])
        browser.js("document.getElementById('run').click()")
        assert browser.wait_for(IMAGE_READY) == "done"
        image_shot, overlay_box = browser.screenshot(), browser.rect("#result-overlay")
        overlay_src = browser.js("document.getElementById('result-overlay').getAttribute('src')")
        assert browser.js("document.getElementById('video-results').hidden")

    job_id = dom.split('src="/files/')[1].split("/")[0]
    job = json.loads(_request(f"{server.url}api/jobs/{job_id}")[2])
    assert f'src="/files/{job_id}/{job["outputs"]["heatmap_video"]}"' in dom
    assert f'src="/files/{job_id}/{job["outputs"]["contact_sheet"]}"' in dom
    assert job["outputs"]["maps"] in dom  # offered for download
    assert 'id="error" role="alert" hidden=""' in dom
    # The contact sheet is drawn where its element is: the screenshot there is the served PNG.
    sheet = Image.open(io.BytesIO(_file(server, job, "contact_sheet")[2]))
    assert sheet_box[2] - sheet_box[0] > 600
    assert _region_difference(shot, sheet_box, sheet) < 4  # 0.5 measured (scaled to fit)
    # The video shows its first frame (compared above the player's controls and away from its centre).
    with av.open(io.BytesIO(_file(server, job, "heatmap_video")[2])) as container:
        first = next(container.decode(video=0)).to_image()
    assert video_box[2] - video_box[0] == first.width and video_box[3] - video_box[1] == first.height
    left, top, right, bottom = video_box
    band = (left, top, right, top + (bottom - top) // 4)
    assert _region_difference(shot, band, first.crop((0, 0, first.width, first.height // 4))) < 5
    # ... and both differ from the page around them.
    page_colour = np.asarray(shot.getpixel((5, shot.height - 5)), dtype=np.float32)
    for box in (band, sheet_box):
        assert np.abs(np.asarray(shot.crop(box), np.float32) - page_colour).mean() > 30
    # The image's overlay, where its element is.
    overlay = Image.open(io.BytesIO(_request(server.url + overlay_src.lstrip("/"))[2]))
    assert overlay_src.endswith("/frame_overlay.png") and overlay_box[2] - overlay_box[0] == overlay.width
    assert _region_difference(image_shot, overlay_box, overlay) < 2  # drawn 1:1
    shutil.rmtree(profile, ignore_errors=True)


def test_the_form_parser_keeps_binary_files_exactly():
    data = bytes(range(256)) * 4 + b"\r\n--\r\n\r\n--not-the-boundary\r\n"
    body = (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="video"; filename="C:\\\\clips\\\\my clip.mp4"\r\n'
        b"Content-Type: video/mp4\r\n\r\n" + data + b"\r\n"
        b'--XyZ\r\nContent-Disposition: form-data; name="audio"; filename=""\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n\r\n"  # a file input left empty
        b'--XyZ\r\nContent-Disposition: form-data; name="mode"\r\n\r\nvideo\r\n'  # a text field
        b"--XyZ--\r\n"
    )
    uploads = parse_form(body, boundary_of("multipart/form-data; boundary=XyZ"))
    assert list(uploads) == ["video"]
    assert uploads["video"].data == data and uploads["video"].filename == "C:\\\\clips\\\\my clip.mp4"
    with pytest.raises(DataError, match="boundaries do not match"):
        parse_form(body[:-9], b"XyZ")
    with pytest.raises(DataError, match="send the files as multipart/form-data"):
        boundary_of("application/json")


def test_stopping_the_app_stops_a_running_video_and_removes_its_files(loaded):
    runner = JobRunner(*loaded)
    job = runner.submit({"video": Upload("video", CLIP.name, CLIP.read_bytes())})
    deadline = time.monotonic() + 60
    while job.done == 0 and job.state != "error" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.state == "running" and 0 < job.done < 37
    runner.close()
    assert job.state == "error" and job.error == "the app is stopping" and job.done < 37
    assert not runner.root.exists()
