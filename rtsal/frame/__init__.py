"""The frame layer, below the CLI: every front end (``webcam``, ``video``, ``demo``, ``image``, ``batch``, the
benchmarks) turns frames into pictures with the same two objects:

- :class:`~rtsal.frame.infer.FrameExplainer`: frames -> results with maps at model resolution (the
  chosen method, method switching, a pinned target class);
- :class:`~rtsal.frame.render.FrameRenderer`: a frame and its result -> the picture (map selection,
  smoothing, resize, view, colour map, labels).

:mod:`rtsal.frame.video_job` runs them over a video file into an atomic output, :mod:`rtsal.frame.live`
over a live source into a window. See docs/design.md.
"""
