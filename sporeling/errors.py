"""The errors sporeling raises. Each names the file, node or input it is about, so the CLI can print
one line and exit non-zero instead of a traceback."""


class SporelingError(Exception):
    """Base of every error that is the user's input rather than a bug in sporeling."""


class ModelLoadError(SporelingError):
    """A model file is missing, corrupt, or uses something we cannot run."""


class UnsupportedOpError(ModelLoadError):
    """One or more ops of a model have no kernel; all of them are listed at once."""


class GraphError(SporelingError):
    """The graph is malformed: a dangling input, a cycle, a duplicate output name."""


class FeedError(SporelingError):
    """A feed passed to run() has the wrong name, shape or dtype."""


class KernelError(SporelingError):
    """A kernel failed on the values it was given; names the node."""


class CheckpointError(SporelingError):
    """A training checkpoint is missing, corrupt, or from a newer sporeling."""


class DataError(SporelingError):
    """A training data file or folder is missing, corrupt, or not in a form sporeling reads."""
