<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}} · lightci</title>
<link rel="stylesheet" href="/static/style.css">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<script src="/static/app.js" defer></script>
</head>
<body>
<header class="top">
  <a class="brand" href="/"><img src="/static/favicon.svg" alt="" width="22" height="22">lightci</a>
  <nav>
    <a href="/"{{!' aria-current="page"' if path == '/' else ''}}>Dashboard</a>
    <a href="/api/status">API</a>
    % if token_set and logged_in and csrf:
    <form method="post" action="/logout" class="inline">
      <input type="hidden" name="csrf" value="{{csrf}}">
      <button class="link" type="submit">Log out</button>
    </form>
    % elif token_set:
    <a href="/login?next={{quote(path)}}" id="login-link">Log in</a>
    % end
  </nav>
</header>
<main id="main">
{{!base}}
</main>
<footer>lightci {{version}} · <a href="/metrics">metrics</a> · <a href="/metrics-page">delivery</a> · <a href="/deployments">deployments</a> · <a href="/health">health</a></footer>
</body>
</html>
