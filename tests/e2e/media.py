"""A synthetic VOD for the browser end-to-end test, made with ffmpeg.

The clip is encoded once (H.264 + AAC, two video renditions, a key frame exactly every
``SEGMENT_S`` seconds and no scene-cut key frames) and then packaged twice with ``-c copy``:

    out_dir/
      source.mp4                 the encode: 2 video streams (360p, 270p) + 1 audio stream
      hls/master.m3u8            fMP4 HLS; audio is a separate rendition (EXT-X-MEDIA)
      hls/v360/index.m3u8        hls/v360/init_0.mp4  hls/v360/seg_00001.m4s ...
      hls/v270/index.m3u8        hls/v270/init_1.mp4  hls/v270/seg_00001.m4s ...
      hls/audio/index.m3u8       hls/audio/init_2.mp4 hls/audio/seg_00001.m4s ...
      dash/manifest.mpd          SegmentTemplate with $Number$ (no SegmentTimeline)
      dash/init-<rep>.m4s        dash/seg-<rep>-00001.m4s ...  (<rep>: 0 = 360p, 1 = 270p, 2 = audio)

**Segment numbering** is the same for every rendition, the audio, HLS and DASH: media
segment ``N`` (1-based, the 5-digit number before ``.m4s``) covers media time
``[(N - 1) * SEGMENT_S, N * SEGMENT_S)`` (audio segments are within one AAC frame, ~21 ms,
of those bounds; HLS audio may have one extra tiny tail segment). :func:`segment_index` reads it back from a path
or URL; init segments and playlists have no number.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

SEGMENT_S = 2
FIRST_SEGMENT = 1  # segment numbers start at 1 (DASH's default startNumber), not 0
FPS = 24
# (name, width, height, video bitrate kb/s): the HLS directory names and DASH rep order.
RENDITIONS = (("v360", 640, 360, 600), ("v270", 480, 270, 300))  # exact 16:9 (DASH needs one DAR)
AUDIO_KBPS = 64

_SEGMENT_RE = re.compile(r"seg[_-](?:[^/]*[_-])?(\d{5})\.m4s$")


def segment_index(path: str) -> int | None:
    """The 1-based media segment number of an HLS or DASH segment path/URL, else None.

    ``hls/v360/seg_00003.m4s`` and ``dash/seg-2-00003.m4s`` are both segment 3 (media time
    4 s to 6 s); a query string (e.g. ``?CMCD=...``) is ignored.
    """
    match = _SEGMENT_RE.search(path.split("?", 1)[0])
    return int(match.group(1)) if match else None


def segment_start_s(n: int) -> float:
    """Media time at which segment ``n`` starts: segment 3 starts at 4 s."""
    return (n - FIRST_SEGMENT) * SEGMENT_S


def _ffmpeg(*args: str) -> None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg not found: run `make e2e-tools`")
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _encode(source: Path, duration_s: int) -> None:
    """Two H.264 renditions + AAC into one MP4, key frames every SEGMENT_S exactly."""
    gop = SEGMENT_S * FPS
    # The media time burned into the picture, then one scaled copy per rendition.
    timecode = ("drawtext=fontfile=/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf:"
                "text='%{pts\\:hms}':x=20:y=20:fontsize=36:fontcolor=white:box=1:boxcolor=black")
    scaled = ";".join(f"[s{i}]scale={w}:{h},setsar=1[v{i}]"
                      for i, (_, w, h, _) in enumerate(RENDITIONS))
    outs = "".join(f"[s{i}]" for i in range(len(RENDITIONS)))
    split = f"[0:v]{timecode},split={len(RENDITIONS)}{outs};{scaled}"
    args = [
        "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate={FPS}:duration={duration_s}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={duration_s}",
        "-filter_complex", split,
    ]
    for i, (_, _, _, kbps) in enumerate(RENDITIONS):
        args += ["-map", f"[v{i}]", f"-b:v:{i}", f"{kbps}k", f"-maxrate:v:{i}", f"{kbps * 11 // 10}k",
                 f"-bufsize:v:{i}", f"{kbps * 2}k"]
    args += [
        "-map", "1:a", "-c:a", "aac", "-b:a", f"{AUDIO_KBPS}k", "-ac", "2",
        "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "main", "-pix_fmt", "yuv420p",
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT_S})", "-threads", "2",
        "-movflags", "+faststart", str(source),
    ]
    _ffmpeg(*args)


def _package_hls(source: Path, out: Path) -> None:
    names = [name for name, *_ in RENDITIONS]
    var_map = " ".join(f"v:{i},agroup:aud,name:{n}" for i, n in enumerate(names))
    var_map += " a:0,agroup:aud,name:audio,default:yes"
    maps = [a for i in range(len(RENDITIONS)) for a in ("-map", f"0:v:{i}")] + ["-map", "0:a:0"]
    _ffmpeg("-i", str(source), *maps, "-c", "copy", "-f", "hls",
            "-hls_time", str(SEGMENT_S), "-hls_playlist_type", "vod",
            "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4",  # ffmpeg names it init_<i>.mp4
            "-start_number", str(FIRST_SEGMENT), "-hls_segment_filename", str(out / "%v" / "seg_%05d.m4s"),
            "-master_pl_name", "master.m3u8", "-var_stream_map", var_map,
            str(out / "%v" / "index.m3u8"))


def _package_dash(source: Path, out: Path) -> None:
    maps = [a for i in range(len(RENDITIONS)) for a in ("-map", f"0:v:{i}")] + ["-map", "0:a:0"]
    _ffmpeg("-i", str(source), *maps, "-c", "copy", "-f", "dash",
            "-seg_duration", str(SEGMENT_S), "-use_template", "1", "-use_timeline", "0",
            "-init_seg_name", "init-$RepresentationID$.m4s",
            "-media_seg_name", "seg-$RepresentationID$-$Number%05d$.m4s",
            "-adaptation_sets", "id=0,streams=v id=1,streams=a",
            str(out / "manifest.mpd"))


def make_vod(out_dir: str | Path, duration_s: int = 40) -> dict:
    """Encode and package the VOD into ``out_dir`` (cached: reused if already there).

    Returns ``{"dir", "hls" (master playlist path), "dash" (MPD path), "segment_s",
    "first_segment" (1), "duration_s", "segments" (video segments per rendition)}``, with
    absolute Paths. Segment N starts at ``(N - first_segment) * segment_s``.
    """
    out = Path(out_dir).resolve()
    source, hls, dash = out / "source.mp4", out / "hls" / "master.m3u8", out / "dash" / "manifest.mpd"
    stamp = out / f".done-{duration_s}s"
    if not stamp.exists():
        if out.exists():
            shutil.rmtree(out)
        for d in [out / "dash", *(out / "hls" / n for n in [r[0] for r in RENDITIONS] + ["audio"])]:
            d.mkdir(parents=True, exist_ok=True)
        _encode(source, duration_s)
        _package_hls(source, out / "hls")
        _package_dash(source, out / "dash")
        stamp.touch()
    return {"dir": out, "hls": hls, "dash": dash, "segment_s": SEGMENT_S,
            "first_segment": FIRST_SEGMENT, "duration_s": duration_s, "segments": -(-duration_s // SEGMENT_S)}


if __name__ == "__main__":  # python -m tests.e2e.media OUT_DIR [DURATION_S]
    import sys

    print(make_vod(sys.argv[1], *(int(a) for a in sys.argv[2:3])))
