"""Folders of audio as the evaluation sees them: one file per prompt id (the file stem), and the checks made on
them before anything is embedded (ids, pairs, prompts, every file decoded, in blocks, and no clip longer than
MAX_CLIP_SECONDS): each mistake a `BadInput`, and what each metric uses said through `log`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import soundfile as sf

from lafa.audio import AudioDecodeError, load_audio, sf_source
from lafa.audio_blocks import EXACT_BLOCK_FORMATS, probe_blocks
from lafa.errors import BadInput, listing
from lafa.metrics.batched import prefetch

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus")


def audio_files(folder: str | Path, option: str | None = None) -> dict[str, Path]:
    """{id: path} of the audio files directly inside `folder`, sorted by id; ids (stems) must be unique.

    A missing or empty folder and two files of one id are `BadInput` errors naming `option` (`--generated`)."""
    folder = Path(folder)
    where = f"{option} {folder}" if option else str(folder)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "no such folder"
        raise BadInput(where, what, "give the folder that holds the audio files (<id>.wav, <id>.flac, ...)")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file():
            continue
        if path.stem in files:
            raise BadInput(where, f"two audio files share the id {path.stem!r} ({files[path.stem].name}, "
                                  f"{path.name})", "keep one file per id (the id is the file name without suffix)")
        files[path.stem] = path
    if not files:
        raise BadInput(where, f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in it",
                       "give the folder the audio was written to (`lafa generate --prompts` or `lafa test` write "
                       "generated/ and reference/)")
    return files


def read_prompts(path: str | Path, option: str = "--prompts") -> dict[str, str]:
    """prompts.json: {id: text}, or a list of {"id": ..., "prompt"/"caption"/"text": ...} records. A key that is
    a file name (`0000_rain.wav`, as older `lafa generate` wrote) stands for its id (the name without suffix)."""
    path = Path(path)
    where = f"{option} {path}"
    fix = 'write {"<id>": "text", ...} or [{"id": "<id>", "prompt": "text"}, ...] (an id is a file name without suffix)'
    if not path.is_file():
        raise BadInput(where, "no such file", "give the prompts.json that `lafa test` or `lafa generate --prompts` "
                                              "wrote beside the audio, or leave --prompts out (no CLAP score)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(where, f"not a JSON file ({e})", fix) from e

    def clip_id(key: object) -> str:
        key = str(key)
        return key[: -len(Path(key).suffix)] if Path(key).suffix.lower() in AUDIO_SUFFIXES else key

    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        return {clip_id(k): v for k, v in data.items()}
    if isinstance(data, list):
        out = {}
        for i, rec in enumerate(data):
            text = next(
                (rec[k] for k in ("prompt", "caption", "text") if isinstance(rec, dict) and k in rec), None
            )
            if text is None or "id" not in rec:
                raise BadInput(where, f"record {i} needs 'id' and one of prompt/caption/text", fix)
            out[clip_id(rec["id"])] = text
        return out
    raise BadInput(where, "expected {id: text} or a list of {id, prompt} records", fix)


def few_ids(ids, n: int = 3) -> str:
    return listing(sorted(ids), n)


MAX_CLIP_SECONDS = 600.0  # longer clips are refused before decoding: every metric embeds a whole clip at once


def probe_file(path: Path) -> tuple[float, float]:
    """(seconds, peak) of one clip, read in blocks (lafa.audio_blocks: one block in memory, whatever its length;
    MP3, whose block reads are not exact, in one read); a clip longer than MAX_CLIP_SECONDS by its header is refused
    before anything is decoded (ValueError). Raises AudioDecodeError for what cannot be decoded."""
    try:
        info = sf.info(sf_source(path))
    except Exception as exc:  # libsndfile raises several types for corrupt input
        raise AudioDecodeError(f"cannot decode {path}: {exc}") from exc
    if info.frames > MAX_CLIP_SECONDS * info.samplerate:
        raise ValueError(f"{info.frames / info.samplerate / 60:.1f} min long")
    if info.format not in EXACT_BLOCK_FORMATS:
        audio, sr = load_audio(path)
        return audio.shape[-1] / sr, float(audio.abs().max())
    try:
        reader = probe_blocks(path)
    except Exception as exc:  # noqa: BLE001 - as load_audio
        raise AudioDecodeError(f"cannot decode {path}: {exc}") from exc
    if reader.error is not None:
        raise AudioDecodeError(f"cannot decode {path}: {reader.error}")
    if reader.decoded == 0:
        raise AudioDecodeError(f"{path} holds no samples")
    if not reader.finite:
        raise AudioDecodeError(f"{path} decodes to non-finite samples")
    return reader.decoded / reader.samplerate, max(-reader.low, reader.high, 0.0)


def probe_files(files: dict[str, Path], option: str, workers: int) -> dict[str, tuple[float, float]]:
    """{id: (seconds, peak)} of every file, each decoded in full in blocks (`probe_file`, `workers` threads ahead):
    a file that cannot be decoded, or is longer than MAX_CLIP_SECONDS, is a `BadInput` naming it (and how many more
    fail), before anything is embedded."""

    def probe(path: Path) -> tuple[float, float] | Exception:
        try:
            return probe_file(path)
        except (AudioDecodeError, ValueError) as e:
            return e

    out, bad = {}, []
    for (clip_id, path), result in zip(files.items(), prefetch(files.values(), probe, workers), strict=True):
        if isinstance(result, Exception):
            bad.append((path, result))
        else:
            out[clip_id] = result
    long = [(p, e) for p, e in bad if not isinstance(e, AudioDecodeError)]
    if long:
        path, error = long[0]
        more = f" ({len(long) - 1} more files of {option} are too)" if len(long) > 1 else ""
        raise BadInput(path, f"is {error}, longer than the {MAX_CLIP_SECONDS / 60:g} min a clip may be (every metric "
                             f"embeds a whole clip at once){more}",
                       "cut it into clips of at most that length (ffmpeg -i IN -f segment -segment_time 30 "
                       "OUT-%03d.flac), each scored as its own id")
    if bad:
        path, error = bad[0]
        reason = str(error).replace(f"cannot decode {path}: ", "").replace(f"{path} ", "")
        reason = " ".join(re.sub(r"Error opening .*?: ", "", reason).split())
        more = f" ({len(bad) - 1} more files of {option} cannot be decoded either)" if len(bad) > 1 else ""
        raise BadInput(path, f"cannot be decoded: {reason}{more}",
                       "replace or remove the file: every audio file of the folder is scored")
    return out


def span(clips: dict[str, tuple[float, float]]) -> str:
    seconds = [s for s, _ in clips.values()]
    return f"{len(seconds)} clips, {min(seconds):.2f}-{max(seconds):.2f} s"


def check_pairs(generated: dict[str, Path], ref_ids: list[str] | None, ref_path: Path, generated_dir: Path,
                paired: list[str], allow_unpaired: bool, log: Callable[[str], None]) -> set[str]:
    """Refuses sets whose ids partly match (or, when a metric pairs clips by id, match not at all) unless
    allow_unpaired, and says through `log` what each metric uses. `paired`: the running metrics that pair clips
    by id (KL_PaSST). Returns those of them that cannot run (no id in both sets, allowed by allow_unpaired)."""
    if ref_ids is None:
        return set()
    both = sorted(set(generated) & set(ref_ids))
    only_gen, only_ref = sorted(set(generated) - set(ref_ids)), sorted(set(ref_ids) - set(generated))
    where = f"--generated {generated_dir}"
    names = " and ".join(paired)
    counts = f"{len(generated)} generated and {len(ref_ids)} reference clips"
    if not only_gen and not only_ref:
        log(f"inputs: {len(both)} ids in both sets; every metric uses all {len(both)} pairs")
        return set()
    if not both:
        if paired and not allow_unpaired:
            raise BadInput(where, f"none of its {len(generated)} ids is among the {len(ref_ids)} reference ids of "
                                  f"{ref_path} (generated: {few_ids(generated)}; reference: {few_ids(ref_ids)})",
                           f"{names} compares each generated clip with the reference clip of the same id: name the "
                           f"files alike (<id>.<ext>), or pass --allow_unpaired to score the FD metrics alone")
        log(f"inputs: no id in both sets: FD metrics compare the {counts} as distributions"
            + (f"; {names} not computed (it pairs clips by id)" if paired else ""))
        return set(paired)
    left_out = "; ".join(part for part in (
        f"{len(only_gen)} generated ids have no reference ({few_ids(only_gen)})" if only_gen else "",
        f"{len(only_ref)} reference ids have no generated clip ({few_ids(only_ref)})" if only_ref else "") if part)
    if not allow_unpaired:
        raise BadInput(where, f"{counts}, {len(both)} ids in both; {left_out}",
                       "generate the missing clips or remove the extra files, or pass --allow_unpaired to score "
                       "the FD metrics on every file and the paired metrics on the ids in both")
    log(f"inputs: FD metrics use all {counts}; " + (f"{names} uses the {len(both)} ids in both sets; left out of it: "
        if paired else "unpaired: ") + left_out)
    return set()


def check_prompts(generated: dict[str, Path], prompts: dict[str, str], where: str, allow_unpaired: bool,
                  log: Callable[[str], None]) -> bool:
    """Whether CLAP can run: the generated clips that have a prompt (all of them unless allow_unpaired)."""
    scored = set(generated) & set(prompts)
    missing, extra = sorted(set(generated) - set(prompts)), sorted(set(prompts) - set(generated))
    fix = "key the prompts by the generated files' names without suffix ({\"<id>\": \"text\"})"
    if not scored and not allow_unpaired:
        raise BadInput(where, f"none of its {len(prompts)} ids names a generated file (prompts: {few_ids(prompts)}; "
                              f"generated: {few_ids(generated)})", fix + ", or pass --allow_unpaired to skip CLAP")
    if missing and scored and not allow_unpaired:
        raise BadInput(where, f"{len(missing)} of the {len(generated)} generated clips have no prompt "
                              f"({few_ids(missing)})", f"add their prompts, or pass --allow_unpaired to score CLAP on "
                                                    f"the {len(scored)} clips that have one")
    log(f"inputs: CLAP scores {len(scored)} generated clips with a prompt"
        + (f"; left out: {len(missing)} without one ({few_ids(missing)})" if missing else "")
        + (f"; {len(extra)} prompts without a clip ignored" if extra else ""))
    return bool(scored)


def check_lengths(gen: dict[str, tuple[float, float]], ref: dict[str, tuple[float, float]] | None,
                  log: Callable[[str], None]) -> None:
    """Say the lengths of both sets, and warn when paired clips differ in length by more than 10%."""
    log(f"inputs: generated {span(gen)}" + (f"; reference {span(ref)}" if ref else "") + "; all decodable")
    if not ref:
        return
    off = [(i, gen[i][0], ref[i][0]) for i in sorted(set(gen) & set(ref))
           if abs(gen[i][0] - ref[i][0]) > 0.1 * max(ref[i][0], gen[i][0])]
    if off:
        shown = ", ".join(f"{i}: {g:.2f} s vs {r:.2f} s" for i, g, r in off[:3])
        log(f"WARNING lengths: {len(off)} of {len(set(gen) & set(ref))} paired clips differ from their reference by "
            f"more than 10% ({shown}{', ...' if len(off) > 3 else ''})")


def refuse_short(clips: dict[str, tuple[float, float]], files: dict[str, Path], too_short: Callable[[float], bool],
                 why: str) -> None:
    """A clip whose length in seconds is `too_short` is a `BadInput` naming it (`why`: what needs more), before
    anything is embedded."""
    short = [i for i, (length, _) in clips.items() if too_short(length)]
    if short:
        more = f" ({len(short) - 1} more files that short)" if len(short) > 1 else ""
        raise BadInput(files[short[0]], f"is {clips[short[0]][0] * 1000:.1f} ms long: {why}{more}",
                       "remove it or regenerate it longer: every audio file of the folder is scored")


def refuse_silence(clips: dict[str, tuple[float, float]], files: dict[str, Path], metrics: list[str]) -> None:
    silent = [i for i, (_, peak) in clips.items() if not peak > 0]
    if silent:
        more = f" ({len(silent) - 1} more silent files)" if len(silent) > 1 else ""
        raise BadInput(files[silent[0]], f"is silent (peak 0){more}",
                       f"remove or regenerate it: {', '.join(metrics)} normalise each clip's peak, which silence "
                       f"does not have (the reference code scores NaN)")
