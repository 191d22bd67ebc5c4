"""Making and refining DeepLabCut projects without DeepLabCut: a new project, frames picked
to label (and, next, the browser labeler, outlier frames and merging)."""
