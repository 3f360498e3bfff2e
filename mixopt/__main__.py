from mixopt.cli import main

raise SystemExit(main())
