"""Stand-in for torchaudio in the LLaMA-Factory environment of CPU-only machines.

LLaMA-Factory 0.9.5's `data/mm_plugin.py` imports torchaudio at top level, but PyPI's
torchaudio builds need a CUDA torch and fail to load against torch 2.13.0+cpu. Text-only SFT
never touches audio, so this module lets the import succeed and makes any real use fail
loudly. `scripts/install-llamafactory.sh` puts it on the venv's path *after* site-packages,
so a working real torchaudio, when installed, always wins.
"""

__version__ = "0.0.0+palign.stub"

_WHY = "torchaudio is a palign stub here (text-only SFT); install a torchaudio that matches torch for audio data"


def load(*args, **kwargs):
    raise RuntimeError(_WHY)


class functional:  # noqa: N801 - mirrors the torchaudio.functional namespace LLaMA-Factory calls
    @staticmethod
    def resample(*args, **kwargs):
        raise RuntimeError(_WHY)
