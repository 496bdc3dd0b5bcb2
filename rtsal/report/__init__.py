"""The review page of ``rtsal video --report`` and ``rtsal batch --report`` (see docs/review.md).

- :mod:`rtsal.report.review`: per frame, the temporal-stability step and what the page shows;
- :mod:`rtsal.report.recorder`: the review video (an atlas per frame: overlay and map tiles), events and
  their thumbnails;
- :mod:`rtsal.report.page`: the self-contained HTML (assets inline) and the batch index page.
"""
