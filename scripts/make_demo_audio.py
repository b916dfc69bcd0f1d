"""Write a short demo recording set (16-bit WAV, 44.1 kHz stereo, and FLAC) for the offline demo.

Sounds, not speech: a 1 kHz tone, a chirp with noise, and a harmonic "voice" with a syllabic
envelope. Deterministic, so the demo prints the same summary every time.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rate = 44100
    t = np.arange(int(rate * 10.0)) / rate
    rng = np.random.default_rng(0)
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t)
    chirp = 0.4 * np.sin(2 * np.pi * (100 * t + (7000 - 100) / (2 * t[-1]) * t**2)) + 0.05 * rng.standard_normal(len(t))
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12)) * 0.15 * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) ** 2
    sf.write(out / "tone.wav", np.stack([tone, tone], axis=1), rate, subtype="PCM_16")
    sf.write(out / "chirp.wav", np.stack([chirp, 0.8 * chirp], axis=1), rate, subtype="PCM_16")
    sf.write(out / "voice.flac", voice, rate, subtype="PCM_24")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-output/audio")
