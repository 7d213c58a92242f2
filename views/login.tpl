% rebase('base.tpl')
<section class="card narrow">
  <h1>Log in</h1>
  % if not token_set:
  <p>This server has no token set: every action is open. Set <code>[server] token</code> in
  lightci.toml (or <code>LIGHTCI_TOKEN</code>) to protect it.</p>
  % elif logged_in:
  <p>You are logged in. <a href="{{next}}">Continue</a></p>
  % else:
  <p class="muted">Actions (trigger, cancel, retry) need the server's token once; a cookie keeps
  you logged in on this browser.</p>
  % if error:
  <p class="flash error" role="alert">{{error}}</p>
  % end
  <form method="post" action="/login" class="stack">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <input type="hidden" name="next" value="{{next}}">
    <label>Token <input type="password" name="token" autocomplete="current-password" required autofocus></label>
    <button type="submit" class="primary">Log in</button>
  </form>
  % end
</section>
