from specplug.cli import main

raise SystemExit(main())
