"""``avatar-jax animate``: speech with known phoneme times (espeak-ng) -> mouth curves, the animated
.glb, the MP4 preview, and bad audio."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pygltflib
import pytest
from scipy.io import wavfile

import espeak
from avatar_jax.animate import AudioError, animate, as_speech, load_wav
from avatar_jax.cli import main
from avatar_jax.io.export import write_glb
from avatar_jax.model import ARKIT_NAMES, arkit, load_head_model
from avatar_jax.texture.caps import capped_model, extend_vertices

# A sentence the curves were not tuned on (tuning used "papa bought my map").
SENTENCE = "Bob and Emma made a big apple pie"
BILABIALS = {"p", "b", "m"}
MOUTH = [n for n in ARKIT_NAMES if n.startswith(("jaw", "mouth"))]


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    if espeak.library() is None:
        pytest.skip("espeak-ng is not installed (.ci/run installs Debian's espeak-ng)")
    path, phonemes = espeak.synthesise(SENTENCE, tmp_path_factory.mktemp("speech") / "sentence.wav")
    return path, phonemes


@pytest.fixture(scope="module")
def avatar_glb(tmp_path_factory):
    """The capped head as an ARKit rig with a small checker texture, written by the exporter."""
    model = load_head_model()
    mesh, caps = capped_model(model)
    verts = np.asarray(extend_vertices(caps, model.neutral))
    yy, xx = np.mgrid[0:64, 0:64]
    tex = (np.stack([xx * 4, yy * 4, ((xx // 8 + yy // 8) % 2) * 200], -1)).astype(np.uint8)
    path = tmp_path_factory.mktemp("rig") / "head.glb"
    return write_glb(path, verts, np.asarray(mesh.triangles), np.asarray(mesh.uvs), np.asarray(mesh.triangle_uvs),
                     tex, arkit.blendshapes(mesh.expression_basis, mesh.expression_names))


def test_the_mouth_opens_in_vowels_and_closes_for_p_b_m(spoken):
    path, phonemes = spoken
    anim = animate(path)
    jaw = anim.weight("jawOpen")
    starts = [t for _, t in phonemes] + [load_wav(path).duration]
    vowels = [(t, starts[i + 1]) for i, (p, t) in enumerate(phonemes)
              if p[0] in "aeiouAEIOU@" and starts[i + 1] - t > 0.05]
    peaks = [jaw[(anim.times >= a) & (anim.times <= b + 0.03)].max() for a, b in vowels]
    assert len(vowels) >= 6 and np.mean(np.array(peaks) > 0.15) >= 0.8 and min(peaks) > 0.08, peaks
    closures = [t for p, t in phonemes if p in BILABIALS]
    assert len(closures) >= 6
    for t in closures:  # the lips meet within +-80 ms of the phoneme espeak-ng reports
        near = jaw[np.abs(anim.times - t) <= 0.08]
        assert near.min() < 0.35 * np.median(peaks), (t, near.min(), np.median(peaks))
    # coarticulation: moving curves, not held mouth shapes (stop-motion holds a viseme for frames)
    step = np.abs(np.diff(jaw))
    speaking = jaw[1:] > 0.05
    assert np.mean(step[speaking] < 1e-3) < 0.1 and step.max() < 0.7 * jaw.max()


def test_the_energy_fallback_follows_the_speech(spoken):
    path, phonemes = spoken
    anim = animate(path, recognizer=None)
    jaw = anim.weight("jawOpen")
    speech_end = phonemes[-1][1]
    assert jaw[anim.times < speech_end].max() > 0.2
    assert jaw[anim.times > speech_end + 0.1].max(initial=0.0) < 0.05


def test_silence_keeps_the_mouth_closed_and_the_face_alive(tmp_path):
    silent = tmp_path / "silence.wav"
    wavfile.write(silent, 16000, np.zeros(16000 * 6, np.int16))
    anim = animate(silent)
    mouth = anim.weights[:, [ARKIT_NAMES.index(n) for n in MOUTH]]
    assert anim.weights.shape == (181, 52) and np.abs(mouth).max() < 1e-3
    assert anim.weight("eyeBlinkLeft").max() > 0.9  # it still blinks
    assert 0.0 < np.abs(anim.head_rotation).max() < np.deg2rad(8)
    np.testing.assert_array_equal(animate(silent).weights, anim.weights)  # deterministic for a seed


def test_any_wav_layout_is_accepted(spoken, tmp_path):
    path, _ = spoken
    rate, data = wavfile.read(path)
    reference = animate(path, blinks=False, head_motion=False).weight("jawOpen")
    stereo48 = tmp_path / "stereo48.wav"
    from scipy.signal import resample_poly

    float48 = (resample_poly(data.astype(np.float64), 480, 221) / 32768.0).astype(np.float32)
    wavfile.write(stereo48, 48000, np.stack([float48, float48], 1))
    mono8 = tmp_path / "mono8.wav"
    wavfile.write(mono8, 8000, resample_poly(data.astype(np.float64), 80, 221).astype(np.int16))
    for other in (stereo48, mono8):
        jaw = animate(other, blinks=False, head_motion=False).weight("jawOpen")
        n = min(len(jaw), len(reference))
        assert np.corrcoef(jaw[:n], reference[:n])[0, 1] > 0.6, other.name


def test_bad_audio_is_named(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioError, match="corrupt.wav"):
        load_wav(corrupt)
    empty = tmp_path / "empty.wav"
    wavfile.write(empty, 16000, np.zeros(0, np.int16))
    with pytest.raises(AudioError, match="no audio samples"):
        load_wav(empty)
    with pytest.raises(AudioError, match="no such audio file"):
        load_wav(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="sample rate"):
        as_speech(np.zeros(100, np.int16), 4000)
    with pytest.raises(AudioError, match="NaN"):
        as_speech(np.array([0.0, np.nan], np.float32), 16000)


def test_cli_writes_an_animated_rig_that_validates_and_a_preview_with_audio(spoken, avatar_glb, tmp_path,
                                                                           gltf_validate, capsys):
    path, phonemes = spoken
    out = tmp_path / "out"
    assert main(["animate", str(avatar_glb), str(path), "--out", str(out), "--size", "128"]) == 0
    glb = out / "head_animated.glb"
    gltf = pygltflib.GLTF2().load(str(glb))
    (anim,) = gltf.animations
    assert sorted(c.target.path for c in anim.channels) == ["rotation", "weights"]
    frames = gltf.accessors[anim.samplers[0].input].count
    assert gltf.accessors[anim.samplers[0].output].count == frames * 52
    assert gltf.meshes[0].extras["targetNames"] == list(ARKIT_NAMES)
    gltf_validate(glb)
    report = json.loads((out / "head_animation.json").read_text())
    assert report["frames"] == frames and report["realtime_factor"] > 0
    header = (out / "head_weights.csv").read_text().splitlines()[0].split(",")
    assert header == ["time_s", *ARKIT_NAMES]
    import imageio_ffmpeg

    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(out / "head.mp4")],
                           capture_output=True, text=True).stderr
    assert "Video: h264" in probe and "Audio: aac" in probe
    video = np.stack(list(_frames(out / "head.mp4")))
    assert abs(len(video) - frames) <= 1 and video.shape[1:] == (128, 128, 3)
    assert np.abs(np.diff(video.astype(np.float64), axis=0)).mean(axis=(1, 2, 3)).max() > 0.2  # it moves


def test_cli_names_bad_inputs(avatar_glb, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"not a wav")
    assert main(["animate", str(avatar_glb), str(corrupt), "--out", str(tmp_path)]) == 1
    assert "corrupt.wav" in capsys.readouterr().err
    fine = tmp_path / "fine.wav"
    wavfile.write(fine, 16000, np.zeros(1600, np.int16))
    broken = tmp_path / "broken.glb"
    broken.write_bytes(b"glTF" + b"\0" * 20)
    assert main(["animate", str(broken), str(fine), "--out", str(tmp_path)]) == 1
    assert "broken.glb" in capsys.readouterr().err
    gltf = pygltflib.GLTF2().load(str(avatar_glb))  # the same rig under ICT names
    gltf.meshes[0].extras = {"targetNames": [f"shape{i}" for i in range(52)]}
    ict = tmp_path / "ict.glb"
    gltf.save_binary(str(ict))
    assert main(["animate", str(ict), str(fine), "--out", str(tmp_path), "--no-video"]) == 1
    assert "ARKit-named" in capsys.readouterr().err


def _frames(path: Path):
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    for raw in reader:
        yield np.frombuffer(raw, np.uint8).reshape(h, w, 3)


@pytest.mark.parametrize("recognizer", ["pocketsphinx", None])
def test_streaming_matches_the_clip_within_its_latency(spoken, recognizer):
    from avatar_jax.animate import AnimationStream

    path, _ = spoken
    speech = load_wav(path)
    offline = animate(speech, recognizer=recognizer)
    stream = AnimationStream(speech.rate, recognizer=recognizer)
    chunk, parts, waits = int(0.02 * speech.rate), [], []
    for i in range(0, len(speech.samples), chunk):
        part = stream.push(speech.samples[i:i + chunk])
        arrived = (i + chunk) / speech.rate
        waits += [arrived - t for t in part.times]  # how long after its audio each frame came out
        parts.append(part)
        assert len(stream._buffer) <= stream.window_s * speech.rate + chunk  # memory stays bounded
    assert len(stream.push(np.zeros(0, np.float32)).weights) == 0  # an empty chunk is fine
    parts.append(stream.close())
    times = np.concatenate([p.times for p in parts])
    weights = np.concatenate([p.weights for p in parts])
    np.testing.assert_allclose(times, offline.times)
    assert max(waits) <= stream.latency_s + 0.02 + 1 / offline.fps
    np.testing.assert_array_equal(weights[:, ARKIT_NAMES.index("eyeBlinkLeft")], offline.weight("eyeBlinkLeft"))
    jaw = weights[:, ARKIT_NAMES.index("jawOpen")]
    assert np.corrcoef(jaw, offline.weight("jawOpen"))[0, 1] > 0.8
