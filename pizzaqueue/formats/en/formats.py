"""Date formats for English pages and admin: times to the second, with the time zone.

An operator lines admin's times up with the board's, the logs and the
database's clock; minutes without a zone cannot be.
"""

from __future__ import annotations

DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s T"
TIME_FORMAT = "H:i:s"
DATE_FORMAT = "Y-m-d"
