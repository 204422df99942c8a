"""Semi-supervision: teacher-ensemble pseudo-labels and the training schedules that use them."""
