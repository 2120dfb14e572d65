sim out/
