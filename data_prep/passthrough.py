"""A source that needs no change is stored as it is: the copy rule and the tag stripping it uses.

A file that is one whole chunk at the shard's rate and channels, in a format the loaders decode, goes into the
shard byte for byte under its own extension instead of being re-encoded to FLAC; tags are removed where the
layout makes that safe (FLAC metadata blocks, MP3 ID3/APEv2 tags, RIFF chunks other than `fmt ` and `data`),
anything unrecognised keeps its bytes, Ogg tags are kept. docs/data.md, "Sources stored as they are".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from data_prep.process import ChunkSettings

SUBTYPE_BITS = {"PCM_16": 16, "PCM_24": 24}
OGG_CODECS = {"VORBIS": "ogg", "OPUS": "opus"}


@dataclass(frozen=True)
class SourceFormat:
    """What libsndfile reports for a file (soundfile.info): format, subtype, rate, channels."""

    format: str
    subtype: str
    samplerate: int
    channels: int

    @classmethod
    def of(cls, info) -> SourceFormat:
        return cls(info.format, info.subtype, int(info.samplerate), int(info.channels))


def copyable_channels(channels: int, settings: ChunkSettings) -> bool:
    """The shard's channel count, or mono into multi-channel shards: every reader duplicates mono exactly as the
    build's own conversion (lafa.audio.to_channels) does, so the loaded samples are the same."""
    return channels == settings.channels or channels == 1


def int16_source(src: SourceFormat, settings: ChunkSettings) -> bool:
    """A 16-bit PCM WAV/FLAC at the shard's rate, with the shard's channels or mono, going into 16-bit shards: the
    build decodes it to its integers (the float decode's samples x 32768; for WAV a tenth of the CPU), checks
    and cuts them, and stores them as they are (copied, or encoded without a float round trip)."""
    return (src.format in ("FLAC", "WAV") and src.subtype == "PCM_16" == settings.flac_subtype
            and src.samplerate == settings.sample_rate and copyable_channels(src.channels, settings))


def copy_extension(src: SourceFormat, settings: ChunkSettings) -> str | None:
    """The member extension a source is stored under unchanged (its audio needs no conversion beyond duplicating
    mono, which every reader does), or None: the build re-encodes it to FLAC. Whether it is one whole chunk and
    decodes completely is checked by the caller."""
    if not settings.copy_sources or src.samplerate != settings.sample_rate or \
            not copyable_channels(src.channels, settings):
        return None
    if src.format in ("FLAC", "WAV") and src.subtype == settings.flac_subtype:
        return src.format.lower()  # same integers as the FLAC the build would write
    if src.format == "MP3":
        return "mp3"
    if src.format == "OGG":
        return OGG_CODECS.get(src.subtype)
    return None


def stored_copy(ext: str, data: bytes, num_samples: int, settings: ChunkSettings) -> bytes | None:
    """The bytes stored for a copied source (`ext` from copy_extension), tags stripped; None when the copy
    cannot be vouched for (a FLAC whose STREAMINFO disagrees): the chunk is then encoded as usual."""
    if ext == "flac":
        return flac_passthrough(data, num_samples, settings)
    if ext == "mp3":
        return mp3_passthrough(data)
    if ext == "wav":
        return wav_passthrough(data, num_samples, settings)
    return data  # Ogg Vorbis / Opus: unchanged


FLAC_KEPT_BLOCKS = (0, 3)  # STREAMINFO, SEEKTABLE; tags, pictures, padding, cue sheets and application data go


def flac_passthrough(data: bytes, num_samples: int, settings: ChunkSettings) -> bytes | None:
    """The FLAC file `data` with only its STREAMINFO and SEEKTABLE metadata, when its audio is exactly what
    encode_flac would store for a chunk of `num_samples` (the shard's bit depth, rate and channels, that
    length): the decoded samples are the same integers, so re-encoding would only spend CPU. None otherwise.
    The metadata block layout is fixed by the FLAC format (RFC 9639, section 8); an ID3 tag in front of the
    stream or anything unexpected gives None (the chunk is then encoded as usual)."""
    if settings.flac_subtype not in SUBTYPE_BITS or data[:4] != b"fLaC":
        return None
    pos, kept, last = 4, [], False
    while not last:
        if pos + 4 > len(data):
            return None
        last, kind, length = bool(data[pos] & 0x80), data[pos] & 0x7F, int.from_bytes(data[pos + 1 : pos + 4], "big")
        block = data[pos + 4 : pos + 4 + length]
        if len(block) != length or kind == 127:
            return None
        if kind in FLAC_KEPT_BLOCKS:
            kept.append((kind, block))
        pos += 4 + length
    if not kept or kept[0][0] != 0 or len(kept[0][1]) != 34:
        return None
    info = int.from_bytes(kept[0][1][10:18], "big")  # 20 bits rate, 3 channels - 1, 5 bits/sample - 1, 36 samples
    rate, channels, bits, total = info >> 44, ((info >> 41) & 7) + 1, ((info >> 36) & 31) + 1, info & (2**36 - 1)
    want = (settings.sample_rate, SUBTYPE_BITS[settings.flac_subtype], num_samples)
    if (rate, bits, total) != want or not copyable_channels(channels, settings):
        return None
    out = [b"fLaC"]
    for i, (kind, block) in enumerate(kept):
        out.append(bytes([kind | (0x80 if i == len(kept) - 1 else 0)]) + len(block).to_bytes(3, "big") + block)
    return b"".join(out) + data[pos:]


def mp3_passthrough(data: bytes) -> bytes:
    """The MPEG audio frames of an MP3 file: leading ID3v2 tags (ID3v2.4 section 3: syncsafe size, +10 bytes
    with the footer flag), a trailing APEv2 tag (32-byte footer, + its header when flagged) and ID3v1 ("TAG",
    128 bytes) removed. The decoder skips all three itself, so the samples are the same (tested). If the bytes
    left do not start with an MPEG frame sync, or a tag's size is inconsistent, the file is kept whole."""
    start = 0
    while data[start : start + 3] == b"ID3" and len(data) >= start + 10:
        size = data[start + 6 : start + 10]
        if any(b & 0x80 for b in size):  # not syncsafe: not a tag we understand
            return data
        start += 10 + ((size[0] << 21) | (size[1] << 14) | (size[2] << 7) | size[3]) + (10 if data[start + 5] & 0x10 else 0)
    end = len(data)
    if end - start >= 128 and data[end - 128 : end - 125] == b"TAG":
        end -= 128
    if end - start >= 32 and data[end - 32 : end - 24] == b"APETAGEX":  # APEv2 footer
        size, flags = struct.unpack("<I4xI", data[end - 20 : end - 8])
        total = size + (32 if flags & (1 << 31) else 0)
        if size < 32 or total > end - start or (flags & (1 << 31) and data[end - total : end - total + 8] != b"APETAGEX"):
            return data
        end -= total
    body = data[start:end]
    if len(body) < 4 or body[0] != 0xFF or body[1] & 0xE0 != 0xE0:  # the first frame header's 11-bit sync
        return data
    return body


def wav_passthrough(data: bytes, num_samples: int, settings: ChunkSettings) -> bytes:
    """A RIFF/WAVE PCM file rewritten with only its `fmt ` and `data` chunks (LIST/INFO, id3, bext, cue ... go:
    PCM decoding reads nothing else), when the layout is plain: one of each, sizes consistent with the file,
    integer PCM at the shard's rate, channels and bit depth, exactly `num_samples` frames. Otherwise the bytes
    unchanged (libsndfile decodes them to the samples the build validated either way)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return data
    chunks: dict[bytes, memoryview] = {}
    pos, view = 12, memoryview(data)  # views: no copy of the audio while parsing
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = view[pos + 8 : pos + 8 + size]
        if len(body) != size or cid in chunks and cid in (b"fmt ", b"data"):
            return data
        chunks[cid] = body
        pos += 8 + size + (size & 1)
    if pos < len(data) - 1 or b"fmt " not in chunks or b"data" not in chunks or len(chunks[b"fmt "]) not in (16, 18):
        return data
    tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", chunks[b"fmt "][:16])
    want_bits = SUBTYPE_BITS.get(settings.flac_subtype)
    if (tag, rate, bits) != (1, settings.sample_rate, want_bits) or not copyable_channels(channels, settings) or \
            align != channels * bits // 8 or len(chunks[b"data"]) != num_samples * align:
        return data
    if list(chunks) == [b"fmt ", b"data"] and len(data) - pos in (0, -1):
        return data  # nothing to drop
    fmt, audio = chunks[b"fmt "], chunks[b"data"]
    pad = b"\x00" * (len(audio) & 1)
    riff = 4 + 8 + len(fmt) + 8 + len(audio) + len(pad)
    return b"".join([b"RIFF", riff.to_bytes(4, "little"), b"WAVE", b"fmt ", len(fmt).to_bytes(4, "little"), fmt,
                     b"data", len(audio).to_bytes(4, "little"), audio, pad])
