"""Routes of the web pages: the customer's menu and tracking, the kitchen display, the board."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

from orders import handover_views, kitchen_views, views

urlpatterns = [
    path("", views.menu, name="menu"),
    # Browsers ask for /favicon.ico on pages that name no icon (admin, Swagger UI): the site's own, not a 404.
    path("favicon.ico", RedirectView.as_view(url=static("favicon.svg"), permanent=True), name="favicon"),
    path("orders/", views.place_order, name="place-order"),
    path("orders/quote/", views.quote, name="quote"),
    path("orders/<uuid:order_id>/receipt/", views.receipt, name="receipt"),
    path("orders/<uuid:order_id>/", views.track_order, name="track-order"),
    path("orders/<uuid:order_id>/cancel/", views.cancel_order, name="cancel-order"),
    path("orders/<uuid:order_id>/reorder/", kitchen_views.reorder, name="reorder"),
    path("kitchen/<str:name>/", views.kitchen, name="kitchen"),
    path("kitchen/<str:name>/tap/", kitchen_views.tap, name="kitchen-tap"),
    path("kitchen/<str:name>/rush/<uuid:order_id>/", views.raise_order_priority, name="raise-order-priority"),
    path("kitchen/<str:name>/counter/", handover_views.counter_collect, name="counter-collect"),
    path("shelf/<str:name>/", handover_views.shelf, name="shelf"),
    path("shelf/<str:name>/take/", handover_views.take, name="shelf-take"),
    path("shelf/<str:name>/deliver/", handover_views.deliver, name="shelf-deliver"),
    path("shelf/<str:name>/give-back/", handover_views.give_back, name="shelf-give-back"),
    path("board/", views.board, name="board"),
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="menu"), name="logout"),
]
