"""``python -m aiothreads.demo``: run the demo service (see ``aiothreads.demo``)."""

from aiothreads.demo import main

main()
