"""Training parts shared by methods: the EMA teacher (``ema``: ``frozen_copy``, ``ema_update_``,
momentum schedules), the embedding queue of MoCo / ISD (``queue``) and the lr / temperature /
momentum schedules (``schedules``)."""
