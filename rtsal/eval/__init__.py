"""Faithfulness evaluation behind ``rtsal eval`` (see docs/design.md).

- :mod:`rtsal.eval.metrics`: deletion/insertion (raw and normalised), substrates, average drop/increase,
  pointing, reference maps (pure tensor functions);
- :mod:`rtsal.eval.stats`: t-intervals and paired bootstrap differences with verdicts (torch-free);
- :mod:`rtsal.eval.methods`: ``NAME[/OPTION...]`` rows (torch-free);
- :mod:`rtsal.eval.inputs`: photos, folders, frames of clips (torch-free);
- :mod:`rtsal.eval.run`: the loop from samples and methods to the report;
- :mod:`rtsal.eval.report`: the table, the verdict lines, the JSON and the plot (written atomically).
"""
