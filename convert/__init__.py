"""Tools around the runtime: checkpoint conversion, an independent float64 NumPy reference, a TF1
reference graph, synthetic checkpoints and the download of Google's released files.

``convert`` imports ``vggish_tf2`` (params, errors, the network's variable table); never the reverse.
"""
