from mlxjan.cli import main

raise SystemExit(main())
