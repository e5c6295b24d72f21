import sys

from app_backend.cli import main

sys.exit(main())
