from headstart.cli.main import main

raise SystemExit(main())
