% rebase('base.tpl')
<section class="card narrow">
  <h1>{{status}}</h1>
  <p class="error-text">{{message}}</p>
  <p><a href="/">Back to the dashboard</a></p>
</section>
