"""Label conventions shared by the data files, the losses and the metrics."""


IGNORE_LABEL = -100  # click label of snippets without a click, as in the official files
