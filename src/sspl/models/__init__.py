"""The networks (core layer: imports only ``sspl.config``, ``sspl.errors``, ``sspl.weights``, ``sspl.losses``).

- :mod:`.streams`: the audio and visual streams every method builds on (encoders, freezing, ``g``);
- :mod:`.sspl`: SSPL and its loss; :mod:`.baselines`: Attention and HardWay;
- :mod:`.encoders`, :mod:`.small`, :mod:`.heads`, :mod:`.attention`, :mod:`.pcm`: the parts;
- :mod:`.factory`: models with their weights (the one place weight files go into models);
  :mod:`.official`: the official SSPL checkpoint files;
- :mod:`.methods`: each method's build, loss and optimiser groups, as plugins of the trainer.
"""
