"""A researcher's own folder, outside the package: a token mixer in `my_mixers.py`, and `dilated.yaml`, the demo
recipe with that mixer in a variant the YAML declares. Used by the tests of the commands that must find it."""

import textwrap

from inception_next.training.config import EXPERIMENTS

MIXER = textwrap.dedent('''
    from torch import nn


    class DilatedBand(nn.Module):
        """A dilated k x k depthwise convolution over every channel."""

        def __init__(self, dim, kernel_size=5, dilation=2):
            super().__init__()
            self.conv = nn.Conv2d(dim, dim, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation,
                                  groups=dim)

        def forward(self, x):
            return self.conv(x)
    ''')

EXPERIMENT = textwrap.dedent('''
    extends: {experiments}/demo.yaml
    model:
      backbone:
        name: atto_dilated
        base: inception_next_atto
        token_mixer: my_mixers.DilatedBand
        mixer_args: {{dilation: 3}}
    ''')


def write_research_folder(folder, experiments=EXPERIMENTS):
    """my_mixers.py and dilated.yaml (extending `experiments`/demo.yaml) in `folder`; returns the YAML's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "my_mixers.py").write_text(MIXER)
    (folder / "dilated.yaml").write_text(EXPERIMENT.format(experiments=experiments))
    return folder / "dilated.yaml"
