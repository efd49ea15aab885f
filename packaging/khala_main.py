"""Khala.app's main script: py2app runs this file inside the bundle."""

import sys

from app.main import main

sys.exit(main())
