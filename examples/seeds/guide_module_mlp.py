# MAX model-pipeline guide, "Neural network module": `max.` -> `maxcli.`, nothing else changed.
# On a machine without a GPU the last line stops with maxcli.driver.DeviceUnavailable, as MAX's
# Accelerator() does.
from maxcli.driver import Accelerator
from maxcli.nn import Module, Linear

class MLP(Module):
    fc1: Linear
    fc2: Linear

    def forward(self, x):
        return self.fc2(self.fc1(x))

# Create a model with two linear layers
model = MLP(fc1=Linear(10, 20), fc2=Linear(20, 5))

# Weights are tracked automatically through the module hierarchy
for name, param in model.parameters:
    print(f"{name}: {param.shape}")
# fc1.weight: [20, 10]
# fc1.bias: [20]
# fc2.weight: [5, 20]
# fc2.bias: [5]

# Move all parameters to an accelerator (GPU)
model.to(Accelerator())
