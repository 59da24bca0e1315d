from django.urls import path

from dashboard.views import actions, api, core, customers, health, panels
from dashboard.views import tables as table_views

urlpatterns = [
    path("", core.index, name="dashboard-index"),
    path("products/", table_views.product_list, name="store-product-list"),
    path("orders/", table_views.order_list, name="store-order-list"),
    path("stock/ledger/", table_views.ledger_list, name="store-ledger-list"),
    path(
        "products/<int:pk>/adjust/",
        actions.action_view(actions.ADJUST),
        name="store-product-adjust",
    ),
    path("products/<int:pk>/edit/", actions.action_view(actions.EDIT), name="store-product-edit"),
    path("products/prices/", actions.action_view(actions.PRICES), name="store-price-change"),
    path("orders/<int:pk>/pay/", actions.action_view(actions.PAY), name="store-order-pay"),
    path("orders/<int:pk>/cancel/", actions.action_view(actions.CANCEL), name="store-order-cancel"),
    path("outbox/<str:pk>/requeue/", actions.outbox_event_requeue, name="store-outbox-requeue"),
    path("customers/<int:user_id>/", customers.customer_detail, name="store-customer-detail"),
    path("panels/<slug:name>/", panels.panel, name="dashboard-panel"),
    path("inspector/<str:log_id>/", panels.query_log, name="dashboard-query-log"),
    path(
        "inspector/<str:log_id>/<int:index>/explain/",
        panels.query_explain,
        name="dashboard-query-explain",
    ),
    path("api/trending.json", api.trending, name="api-trending"),
    path("healthz", core.healthz, name="health-liveness"),
    path("readyz", health.readyz, name="health-readiness"),
]
