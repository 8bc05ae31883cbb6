"""Data: data sets and their task splits.

`datasets` fetches MNIST, Fashion-MNIST and TFDS data sets, checks them by SHA-256 and caches
them; `tasks` splits a data set into a sequence of tasks (class-incremental, permuted, i.i.d.).
"""
