// Placeholder entry point until the CLI lands (host issue).
return 0;
